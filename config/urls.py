from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("imagecache.api.urls")),
]

handler400 = "imagecache.api.exception_handlers.bad_request"
handler403 = "imagecache.api.exception_handlers.permission_denied"
handler404 = "imagecache.api.exception_handlers.not_found"
handler500 = "imagecache.api.exception_handlers.server_error"
