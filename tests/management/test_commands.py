"""The management commands, through call_command: a one-line help, their
output through self.stdout, and a summary line."""

import io
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand
from django.template.defaultfilters import filesizeformat
from django_q.models import Schedule

from imagecache.models import Entry, Fetch, FetchState
from imagecache.schedules import MAINTAIN
from imagecache.services import fetching
from imagecache.services.entries import entry_create
from tests.harness.data import NOW, PNG, QUERY

pytestmark = pytest.mark.django_db

COMMANDS = ["prune_cache", "recover_pending", "register_schedules", "serve"]


def run(name: str, *args: str) -> list[str]:
    out = io.StringIO()
    call_command(name, *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_a_one_line_help(name):
    assert get_commands()[name] == "imagecache"
    command = load_command_class("imagecache", name)
    assert isinstance(command, BaseCommand)
    assert command.help and "\n" not in command.help


@pytest.fixture
def expired_entry(fetch_chart, django_capture_on_commit_callbacks) -> Entry:
    with time_machine.travel(NOW, tick=False):
        with django_capture_on_commit_callbacks(execute=True):
            entry = entry_create(api_query=QUERY, ttl=60)
        fetching.fetch_run(fetch_id=entry.fetch_id)
    return entry


def test_prune_cache_dry_run_says_what_would_go_and_removes_nothing(settings, expired_entry):
    settings.STALE_IF_ERROR = 0  # else the last image of a query stays
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        lines = run("prune_cache", "--dry-run")
    assert lines == [
        f"Would prune 1 entries, 1 fetches, 1 files, {filesizeformat(len(PNG))} to free"
    ]
    assert Entry.objects.filter(pk=expired_entry.pk).exists()


def test_prune_cache_removes_expired_entries_and_says_how_much(settings, expired_entry):
    settings.STALE_IF_ERROR = 0
    with time_machine.travel(NOW + timedelta(seconds=61), tick=False):
        lines = run("prune_cache")
    assert lines == [f"Pruned 1 entries, 1 fetches, 1 files, {filesizeformat(len(PNG))} freed"]
    assert not Entry.objects.exists() and not Fetch.objects.exists()


def test_recover_pending_enqueues_each_pending_fetch_and_sums_up(fetch_chart):
    # Its on_commit never runs: the fetch stays pending, as after a crash.
    entry = entry_create(api_query=QUERY)
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.PENDING
    lines = run("recover_pending")
    assert lines == [f"Enqueued fetch {entry.fetch_id}", "Recovered 1 pending fetches"]
    # The test profile runs tasks as they are enqueued.
    assert Fetch.objects.get(pk=entry.fetch_id).state == FetchState.READY
    assert fetch_chart.call_count == 1


def test_register_schedules_is_idempotent_and_names_them():
    assert run("register_schedules") == [f"Registered 1 schedules: {MAINTAIN}"]
    assert run("register_schedules") == [f"Registered 1 schedules: {MAINTAIN}"]
    schedule = Schedule.objects.get(name=MAINTAIN)
    assert schedule.func == "imagecache.tasks.maintain_cache"
    assert Schedule.objects.count() == 1
