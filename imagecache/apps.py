from typing import Any

from django.apps import AppConfig


class ImageCacheConfig(AppConfig):
    name = "imagecache"
    verbose_name = "Image cache"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db import transaction
        from django.db.models.signals import post_delete, post_save

        from imagecache.files import links
        from imagecache.models import Chart, ChartImage, Entry

        def unlink(sender: type, instance: Entry, **kwargs: object) -> None:
            # Every way an entry goes (prune, purge, eviction, cascades) takes
            # its fast-path link with it.
            links.entries_unlink(entry_ids=[instance.pk])

        def chart_changed(sender: type, instance: Chart, **kwargs: Any) -> None:
            # Every write of a chart, by any road (the admin, the API,
            # charts_load, the ORM), makes the fast paths forget what they
            # learnt of charts: now, and again once it is committed, so that
            # nothing learnt from the old row outlives the write.
            links.charts_stamp_touch()
            transaction.on_commit(links.charts_stamp_touch)

        def chart_image_unlink(sender: type, instance: ChartImage, **kwargs: object) -> None:
            links.chart_images_unlink(query_keys=[instance.query_hash])

        # weak=False: a local function would otherwise be collected at once.
        post_delete.connect(
            unlink, sender=Entry, weak=False, dispatch_uid="imagecache.entry_unlink"
        )
        for signal in (post_save, post_delete):
            signal.connect(
                chart_changed, sender=Chart, weak=False, dispatch_uid="imagecache.chart_changed"
            )
        post_delete.connect(
            chart_image_unlink,
            sender=ChartImage,
            weak=False,
            dispatch_uid="imagecache.chart_image_unlink",
        )
