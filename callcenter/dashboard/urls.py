from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

app_name = "dashboard"

urlpatterns = [
    path("agent/", views.agent_page, name="agent"),
    path("agent/api/calls", views.calls_list, name="calls"),
    # Ids are parsed by the views: a malformed one is a 400 in JSON, not a 404 page.
    path("agent/api/calls/<str:call_id>", views.call_detail, name="call"),
    path("agent/api/calls/<str:call_id>/segments", views.call_segments, name="segments"),
    path("agent/api/calls/<str:call_id>/take", views.call_take, name="take"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(template_name="dashboard/login.html", redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="dashboard:login"), name="logout"),
]
