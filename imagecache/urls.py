from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from imagecache import apis
from imagecache.ops import health

urlpatterns = [
    path("", apis.index, name="index"),
    path("requests", apis.RequestCreateApi.as_view(), name="request-create"),
    path("image/<str:entry_id>", apis.ImageGetApi.as_view(), name="image-get"),
    path("info", apis.InfoApi.as_view(), name="info"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", health.HealthzApi.as_view(), name="healthz"),
    path("readyz", health.ReadyzApi.as_view(), name="readyz"),
    path("metrics", health.MetricsApi.as_view(), name="metrics"),
]
