from django.apps import AppConfig


class ImageCacheConfig(AppConfig):
    name = "imagecache"
    verbose_name = "Image cache"
    default_auto_field = "django.db.models.BigAutoField"
