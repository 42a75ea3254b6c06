"""The committed migrations match the models."""

from __future__ import annotations

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_lacks_a_migration():
    # Exits with status 1 when a migration is missing.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)
