from typing import Any

from django.core.management.base import BaseCommand

from imagecache.schedules import schedules_register


class Command(BaseCommand):
    help = "Create or update the periodic tasks (pruning); safe to run at every start."

    def handle(self, *args: Any, **options: Any) -> None:
        names = schedules_register()
        self.stdout.write(f"Registered {len(names)} schedules: {', '.join(names)}")
