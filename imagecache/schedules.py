"""The periodic work, declared in one place and registered idempotently."""

import math

from django.conf import settings
from django_q.models import Schedule

MAINTAIN = "imagecache.maintain_cache"


def schedules_register() -> list[str]:
    """Create or update every schedule by name: safe to run at every start.

    django-q2 schedules whole minutes, and its scheduler looks every 30 s, so
    CACHE_MAINTENANCE_PERIOD is rounded up to whole minutes.
    """
    minutes = max(1, math.ceil(settings.CACHE_MAINTENANCE_PERIOD / 60))
    Schedule.objects.update_or_create(
        name=MAINTAIN,
        defaults={
            "func": "imagecache.tasks.maintain_cache",
            "schedule_type": Schedule.MINUTES,
            "minutes": minutes,
            "repeats": -1,
        },
    )
    return [MAINTAIN]
