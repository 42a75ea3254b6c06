from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from callcenter.ops.health import healthz, metrics_view, readyz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("", include("callcenter.calls.urls")),
    path("", include("callcenter.dashboard.urls")),
    path("", include("callcenter.analytics.urls")),
    path("", RedirectView.as_view(pattern_name="dashboard:agent", permanent=False)),
]
