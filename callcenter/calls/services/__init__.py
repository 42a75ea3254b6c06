"""Writes of the calls app, one module per domain (as Zulip's
``zerver/actions/``): ``customers``, ``lines``, ``calls``, ``segments``,
``model_versions``, ``adaptation``, ``privacy``, ``training`` and
``maintenance``; ``enqueue`` is the one place that queues Celery tasks (by
name: the backend never imports ``tasks/``). The model side of the training
rules is asr_core's, through the bridge ``callcenter.asr``.

Every function takes keyword-only arguments, validates them, and raises
``callcenter.errors`` exceptions, never a bare ``IntegrityError``: the caller
learns what went wrong in words and a code.

This package re-exports every domain's public functions, and callers use
them through it (``from callcenter.calls import services``, then
``services.call_end(...)``): a call site does not need to know which domain
module a write lives in, and moving one between modules changes no caller.
The domain modules import each other directly, never through this package.
"""

from .customers import (
    phone_normalize,
    customer_create,
    customer_get_or_create,
    customer_for_caller,
)
from .lines import (
    line_token_hash,
    line_create,
    line_token_rotate,
    line_authenticate,
)
from .calls import (
    call_start,
    call_end,
    call_assign_agent,
)
from .segments import (
    segment_create,
    segment_finish,
    segments_requeue,
    segment_store_result,
    segment_mark_failed,
    segment_verify,
    segments_verify_as_recognized,
    segments_rerecognize,
)
from .model_versions import (
    model_version_register,
    model_version_check,
    model_version_promote,
    voice_profile_create,
    model_version_rollback,
    model_version_ensure_active,
    model_version_ensure_backbone,
    final_model,
    backbone_model,
    active_model,
)
from .adaptation import (
    adaptation_backbones,
    ADAPTATION_MIN_SEGMENTS,
    adaptation_schedule_after_call,
    adaptation_request,
    adaptation_run_start,
    adaptation_run_fail,
    adaptation_run_finish,
)
from .adaptation_run import (
    adaptation_run_execute,
)
from .privacy import (
    customer_forget,
)
from .training import (
    TrainingConfig,
    training_config,
    training_run_start,
    training_run_finish,
    model_version_create_promoted,
    meta_training_run,
)
from .maintenance import (
    maintenance_sweep,
    segments_requeue_stuck,
    call_close_orphaned,
    segments_fail_without_audio,
)

__all__ = [
    "phone_normalize",
    "customer_create",
    "customer_get_or_create",
    "customer_for_caller",
    "line_token_hash",
    "line_create",
    "line_token_rotate",
    "line_authenticate",
    "call_start",
    "call_end",
    "call_assign_agent",
    "segment_create",
    "segment_finish",
    "segments_requeue",
    "segment_store_result",
    "segment_mark_failed",
    "segment_verify",
    "segments_verify_as_recognized",
    "segments_rerecognize",
    "model_version_register",
    "model_version_check",
    "model_version_promote",
    "voice_profile_create",
    "model_version_rollback",
    "model_version_ensure_active",
    "model_version_ensure_backbone",
    "adaptation_backbones",
    "ADAPTATION_MIN_SEGMENTS",
    "adaptation_schedule_after_call",
    "adaptation_request",
    "adaptation_run_start",
    "adaptation_run_fail",
    "adaptation_run_finish",
    "customer_forget",
    "training_run_start",
    "training_run_finish",
    "model_version_create_promoted",
    "TrainingConfig",
    "training_config",
    "meta_training_run",
    "maintenance_sweep",
    "segments_requeue_stuck",
    "call_close_orphaned",
    "segments_fail_without_audio",
]
