from typing import Any

from django.core.management.base import BaseCommand

from imagecache.services import housekeeping


class Command(BaseCommand):
    help = "Enqueue again every pending fetch, and every fetch whose worker died."

    def handle(self, *args: Any, **options: Any) -> None:
        fetch_ids = housekeeping.fetch_recover()
        for fetch_id in fetch_ids:
            self.stdout.write(f"Enqueued fetch {fetch_id}")
        self.stdout.write(f"Recovered {len(fetch_ids)} pending fetches")
