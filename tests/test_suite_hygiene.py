"""The test suite itself leaves the project's folders alone."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings


def test_every_test_stores_media_and_models_outside_the_projects_var_folder():
    var = (Path(settings.BASE_DIR) / "var").resolve()
    for folder in (settings.MEDIA_ROOT, settings.MODEL_DIR):
        assert not Path(folder).resolve().is_relative_to(var), folder
