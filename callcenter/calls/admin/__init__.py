"""Django admin for supervisors: find calls by phone number or call id, read
and listen to transcripts, correct and verify them, re-recognize, re-adapt
or forget a caller, follow each caller's profile versions and accuracy, and
promote or roll back model versions. One module per model; ``common`` holds
the review actions and renderers several of them share.

Permissions beyond Django's view/change: ``calls.verify_segment``,
``calls.rerecognize_segment``, ``calls.adapt_customer``,
``calls.forget_customer``, ``calls.promote_modelversion``. The services check
them again; the admin only hides what a user may not do."""

from django.contrib import admin

# Importing each module registers its model admin.
from . import (  # noqa: F401
    adaptation_runs,
    agents,
    calls,
    customers,
    lines,
    model_versions,
    segments,
    training_runs,
    voice_profiles,
)

admin.site.site_header = "Call center"
admin.site.site_title = "Call center admin"
admin.site.index_title = "Calls, transcripts and voice profiles"
