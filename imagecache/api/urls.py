from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from imagecache.api import views
from imagecache.ops import health
from imagecache.wire import IMAGE_PATH

urlpatterns = [
    path("", views.index, name="index"),
    path("requests", views.RequestCreateApi.as_view(), name="request-create"),
    path(f"{IMAGE_PATH[1:]}<str:entry_id>", views.ImageGetApi.as_view(), name="image-get"),
    path("info", views.InfoApi.as_view(), name="info"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", health.HealthzApi.as_view(), name="healthz"),
    path("readyz", health.ReadyzApi.as_view(), name="readyz"),
    path("metrics", health.MetricsApi.as_view(), name="metrics"),
]
