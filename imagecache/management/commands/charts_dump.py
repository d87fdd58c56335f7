import json
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandParser

from imagecache.services import chart_definitions


class Command(BaseCommand):
    help = "Write every saved chart to stdout, as charts_load reads it (YAML, or JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=("yaml", "json"), default="yaml")

    def handle(self, *args: Any, format: str, **options: Any) -> None:
        dump = chart_definitions.charts_dump()
        if format == "json":
            self.stdout.write(json.dumps(dump, indent=2, ensure_ascii=False))
        else:
            self.stdout.write(yaml.safe_dump(dump, sort_keys=False, allow_unicode=True), ending="")
        self.stderr.write(f"Dumped {len(dump['charts'])} charts")
