from django.urls import path

from callcenter.analytics import views

app_name = "analytics"

urlpatterns = [
    # The id is parsed by the view: a malformed one is a 400 in JSON, not a 404 page.
    path("supervisor/api/calls/<str:call_id>", views.call_export, name="call_export"),
]
