from django.urls import path

from imagecache import apis

urlpatterns = [
    path("", apis.index, name="index"),
    path("requests", apis.RequestCreateApi.as_view(), name="request-create"),
    path("image/<str:entry_id>", apis.ImageGetApi.as_view(), name="image-get"),
    path("info", apis.InfoApi.as_view(), name="info"),
]
