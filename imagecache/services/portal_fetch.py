"""A portal link asked of Kentik (query/url), by a queue worker: within the
deployment's budget and pause (services.shield), never the call that goes
first after a pause, and counted like any other call.

Imported by the task module alone: it imports the Kentik seam.
"""

import json
import logging

from django.db import transaction
from django.utils import timezone

from imagecache import kentik
from imagecache.models import PortalLink
from imagecache.services import shield

logger = logging.getLogger(__name__)


def portal_link_fetch(*, link_id: int) -> str:
    """Ask Kentik for a stored query's portal link, once: what happened.

    No wait and no retry here: a link is worth less than any image, so a
    full budget or a pause leaves it for the next ask (services.portal.ASK_AGAIN).
    """
    link = PortalLink.objects.filter(pk=link_id).first()
    if link is None or link.url:
        return "nothing to ask"
    with transaction.atomic():
        gate = shield.gate_lock()
        now = timezone.now()
        admission = shield.admit(gate=gate, now=now)
        # After a pause, the one call that goes first is an image's.
        withheld = "paused" if admission.probe else admission.reason
        if not withheld:
            shield.call_record(now=now)
    if withheld:
        return _failed(link, f"not asked: {withheld}")
    try:
        url = kentik.fetch_portal_link(json.loads(link.query_json), retries=0)
    except kentik.RateLimited as exc:
        shield.pause(reason=str(exc.status), retry_after=exc.retry_after)
        return _failed(link, f"Kentik answered {exc.status}: {exc.message}")
    except kentik.KentikError as exc:
        # Other failures do not pause the images: query/url failing says
        # little of topXchart, and the image fetches find out for themselves.
        return _failed(link, f"Kentik answered {exc.status}: {exc.message}")
    PortalLink.objects.filter(pk=link.pk).update(
        url=url, fetched_at=timezone.now(), error_message=""
    )
    logger.info("portal link %s: stored", link.pk)
    return "stored"


def _failed(link: PortalLink, message: str) -> str:
    PortalLink.objects.filter(pk=link.pk).update(error_message=message)
    logger.warning("portal link %s: %s", link.pk, message)
    return message
