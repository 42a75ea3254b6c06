from django.urls import path

from callcenter.calls.views import segment_audio

app_name = "calls"

urlpatterns = [
    path("calls/segments/<int:segment_id>/audio", segment_audio, name="segment_audio"),
]
