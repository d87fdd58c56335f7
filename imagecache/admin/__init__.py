"""The cache for operators: entries and fetches, read-only (the service makes
them), with actions that call services, and the cache at a glance above the
entries. Images are shown through staff-only views that read them from
storage, so CACHE_PATH is never exposed.

`entries` and `fetches` register their ModelAdmins when Django's admin
imports this package; `base` and `display` are what they share.
"""

from django.contrib import admin

from imagecache.admin import entries, fetches, saved_charts  # noqa: F401 - they register the models

admin.site.site_header = "Kentik Image Cache"
admin.site.site_title = "Kentik Image Cache"
admin.site.index_title = "Operating the cache"
