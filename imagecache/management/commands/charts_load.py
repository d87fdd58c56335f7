import json
from pathlib import Path
from typing import Any

import yaml
from django.core.management.base import BaseCommand, CommandError, CommandParser

from imagecache.errors import ChartsRefused
from imagecache.services import chart_definitions


def document_read(path: Path) -> Any:
    """A charts file's content: JSON by its extension (or, without one, when
    it starts as JSON does), else YAML, which only builds plain data here."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise CommandError(f"{path}: cannot be read ({reason}); nothing loaded") from None
    as_json = path.suffix.lower() == ".json" or (
        path.suffix.lower() not in (".yaml", ".yml") and text.lstrip().startswith(("{", "["))
    )
    try:
        return json.loads(text) if as_json else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if as_json else "YAML"
        raise CommandError(f"{path}: is not {kind}: {exc}; nothing loaded") from None


class Command(BaseCommand):
    help = "Create or update the saved charts of YAML or JSON files, all or nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
        parser.add_argument(
            "--prune", action="store_true", help="Delete the charts that no file names."
        )

    def handle(self, *args: Any, files: list[Path], prune: bool, **options: Any) -> None:
        documents = [(str(path), document_read(path)) for path in files]
        try:
            result = chart_definitions.charts_load(documents=documents, prune=prune)
        except ChartsRefused as exc:
            raise CommandError(f"{exc.message}; nothing loaded") from None
        self.stdout.write(f"Loaded {len(files)} files: {result}")
