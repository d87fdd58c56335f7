import re
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from imagecache import chart_params, chart_urls
from imagecache.errors import ChartInvalid, ChartNotFound
from imagecache.media import BY_EXTENSION
from imagecache.selectors.charts import chart_get

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def expires_parse(text: str) -> int:
    """Seconds from '90s', '10m', '12h' or '7d'."""
    found = re.fullmatch(r"([1-9][0-9]{0,6})([smhd])", text)
    if found is None:
        raise ValueError(f"{text!r} is not a duration such as 90s, 10m, 12h or 7d")
    return int(found.group(1)) * UNITS[found.group(2)]


class Command(BaseCommand):
    help = "Print the whole URL of a saved chart's image, signed when CHART_URL_KEYS is set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument(
            "--param", action="append", default=[], metavar="NAME=VALUE", help="A parameter."
        )
        parser.add_argument("--format", default="png", choices=list(BY_EXTENSION))
        parser.add_argument("--expires", help="How long the URL works: 90s, 10m, 12h, 7d.")

    def handle(
        self, *args: Any, slug: str, param: list[str], format: str, expires: str | None, **_: Any
    ) -> None:
        given: dict[str, str] = {}
        for pair in param:
            name, equals, value = pair.partition("=")
            if not equals or name in given:
                raise CommandError(f"--param {pair!r}: give each parameter once, as NAME=VALUE")
            given[name] = value
        try:
            chart = chart_get(slug=slug)
            chart_params.values_check(chart_params.params_parse(chart.params), given)
            seconds = expires_parse(expires) if expires else None
        except (ChartNotFound, ChartInvalid, ValueError) as exc:
            raise CommandError(f"{slug}: {exc}") from None
        if not chart_urls.url_keys():
            self.stderr.write("CHART_URL_KEYS is not set: the URL is not signed.")
        self.stdout.write(
            chart_urls.url_make(
                path=chart_urls.chart_path(slug, format),
                params=given,
                expires=int(time.time()) + seconds if seconds else None,
            )
        )
