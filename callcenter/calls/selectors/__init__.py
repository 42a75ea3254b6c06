"""Reads of the calls app, one module per domain as in ``services``
(``customers``, ``calls``, ``segments``, ``model_versions``, ``adaptation``,
``training``, ``agents``, ``maintenance``): keyword-only arguments, querysets
or model instances out, ``NotFound`` where the caller asked for one thing
that is not there.

Callers use them through this package (``selectors.customer_history(...)``),
which re-exports every domain's public names; the domain modules import each
other directly.
"""

from .customers import (
    customer_get,
    customer_find,
    customer_count,
    CustomerHistory,
    customer_history,
)
from .calls import (
    call_get,
    calls_live,
    calls_live_count,
    calls_for_customer,
)
from .segments import (
    segment_get,
    call_segments,
    segments_by_id,
    segment_status_counts,
    segments_waiting_for_recognition,
)
from .model_versions import (
    model_version_active,
    model_version_get,
    voice_profile_latest,
    voice_profile_for_model,
    voice_profiles_for_customer,
)
from .adaptation import (
    adaptation_improvement,
    customer_accuracy_history,
    customer_adaptation_segments,
    adaptation_run_get,
)
from .training import (
    verified_segments_since,
    training_run_latest,
)
from .agents import (
    agent_for_user,
    agent_by_username,
)
from .maintenance import (
    MAX_REQUEUE_AGE_S,
    calls_live_started_before,
    calls_closed_with_segments_without_audio,
    segments_to_requeue,
)

__all__ = [
    "customer_get",
    "customer_find",
    "customer_count",
    "CustomerHistory",
    "customer_history",
    "call_get",
    "calls_live",
    "calls_live_count",
    "calls_for_customer",
    "segment_get",
    "call_segments",
    "segments_by_id",
    "segment_status_counts",
    "model_version_active",
    "model_version_get",
    "voice_profile_latest",
    "voice_profile_for_model",
    "voice_profiles_for_customer",
    "adaptation_improvement",
    "customer_accuracy_history",
    "customer_adaptation_segments",
    "adaptation_run_get",
    "verified_segments_since",
    "training_run_latest",
    "agent_for_user",
    "agent_by_username",
    "calls_live_started_before",
    "calls_closed_with_segments_without_audio",
    "segments_to_requeue",
    "MAX_REQUEUE_AGE_S",
]
