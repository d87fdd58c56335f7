from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from imagecache.api import chart_views, views
from imagecache.ids import CHART_SLUG_PATTERN
from imagecache.media import BY_EXTENSION
from imagecache.ops import health
from imagecache.wire import IMAGE_PATH

urlpatterns = [
    path("", views.index, name="index"),
    path("requests", views.RequestCreateApi.as_view(), name="request-create"),
    path(f"{IMAGE_PATH[1:]}<str:entry_id>", views.ImageGetApi.as_view(), name="image-get"),
    re_path(
        rf"^charts/(?P<slug>{CHART_SLUG_PATTERN})"
        rf"\.(?P<ext>{'|'.join(BY_EXTENSION)})$",
        views.ChartImageGetApi.as_view(),
        name="chart-image-get",
    ),
    path("info", views.InfoApi.as_view(), name="info"),
    path("charts/", chart_views.ChartListApi.as_view(), name="chart-list"),
    # No '.' in a slug: `/charts/{slug}.{ext}` is the image's route.
    re_path(
        f"^charts/(?P<slug>{CHART_SLUG_PATTERN})$",
        chart_views.ChartApi.as_view(),
        name="chart-page",
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("healthz", health.HealthzApi.as_view(), name="healthz"),
    path("readyz", health.ReadyzApi.as_view(), name="readyz"),
    path("metrics", health.MetricsApi.as_view(), name="metrics"),
]
