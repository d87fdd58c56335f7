"""Kentik's portal link of a query ("Open in Kentik"), asked once and kept.

A web process reads the stored link, or enqueues one task to ask Kentik for
it (`imagecache.tasks.fetch_portal_link`, by name: web processes never
import the Kentik client) and answers None meanwhile. An ask that failed,
or whose task was lost, is asked again at the first read past ASK_AGAIN:
one task per query per ASK_AGAIN at most, and no task enqueues another, so a
failure is never retried in a loop.
"""

import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from imagecache.hashing import query_hash
from imagecache.models import PortalLink
from imagecache.services import queue

logger = logging.getLogger(__name__)

# What queued tasks store: it must keep naming the task.
LINK_TASK = "imagecache.tasks.fetch_portal_link"
ASK_AGAIN = timedelta(minutes=5)


def link_query(query: Any) -> Any:
    """The query Kentik's query/url takes: the chart's, without its imageType."""
    if isinstance(query, dict):
        return {key: value for key, value in query.items() if key != "imageType"}
    return query


def portal_link_get(*, query: Any) -> str | None:
    """The portal link of `query` if Kentik gave one; else None, with one task
    enqueued to ask for it unless one was asked within ASK_AGAIN."""
    link_of = link_query(query)
    now = timezone.now()
    link, created = PortalLink.objects.defer("query_json").get_or_create(
        query_hash=query_hash(link_of),
        defaults={"query_json": json.dumps(link_of, ensure_ascii=False), "asked_at": now},
    )
    if link.url:
        return link.url
    if not created:
        if link.asked_at is not None and link.asked_at > now - ASK_AGAIN:
            return None
        # Whoever moves asked_at asks: the others, racing, find it moved.
        moved = PortalLink.objects.filter(pk=link.pk, url="", asked_at=link.asked_at)
        if not moved.update(asked_at=now):
            return None
    transaction.on_commit(lambda: _task_enqueue(link.pk))
    return None


def _task_enqueue(link_id: int) -> None:
    try:
        async_task(
            LINK_TASK,
            link_id,
            task_name=f"portal-link-{link_id}",
            timeout=settings.FETCH_TASK_TIMEOUT,
            save=False,
            broker=queue.broker(),
        )
    # Any broker's own error: the link is asked for again past ASK_AGAIN.
    except Exception as exc:  # noqa: BLE001
        logger.warning(
            "portal link %s: the broker did not take its task (%s: %s); asked again later",
            link_id,
            type(exc).__name__,
            exc,
        )
