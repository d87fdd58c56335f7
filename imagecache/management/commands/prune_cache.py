from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.template.defaultfilters import filesizeformat

from imagecache.services import housekeeping


class Command(BaseCommand):
    help = "Remove expired entries, unused fetches and stray files; evict past CACHE_MAX_BYTES."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Only say what would go.")

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        result = housekeeping.cache_prune(dry_run=dry_run) + housekeeping.cache_evict(
            dry_run=dry_run
        )
        verb = "Would prune" if dry_run else "Pruned"
        self.stdout.write(
            f"{verb} {result.entries} entries, {result.fetches} fetches, {result.files} files, "
            f"{filesizeformat(result.bytes_freed)} {'to free' if dry_run else 'freed'}"
        )
