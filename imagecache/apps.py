from django.apps import AppConfig


class ImageCacheConfig(AppConfig):
    name = "imagecache"
    verbose_name = "Image cache"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from imagecache.files import links
        from imagecache.models import Entry

        def unlink(sender: type, instance: Entry, **kwargs: object) -> None:
            # Every way an entry goes (prune, purge, eviction, cascades) takes
            # its fast-path link with it.
            links.entries_unlink(entry_ids=[instance.pk])

        # weak=False: a local function would otherwise be collected at once.
        post_delete.connect(
            unlink, sender=Entry, weak=False, dispatch_uid="imagecache.entry_unlink"
        )
