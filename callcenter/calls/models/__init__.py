"""Data model of the call center: who called, what was said, how the
recognizer was adapted to them. One module per group of models
(customers, lines, calls, model_versions, adaptation, training); every
model and choice is importable from ``callcenter.calls.models``.

Writes go through ``services`` and reads through ``selectors``; the
constraints hold whatever path a row takes (admin, shell, a bug).
"""

from callcenter.calls.models.adaptation import AdaptationRun, AdaptationStatus, AdaptationTrigger
from callcenter.calls.models.calls import Call, CallDirection, CallProtocol, CallStatus, Segment, SegmentStatus, Speaker
from callcenter.calls.models.customers import Agent, Customer
from callcenter.calls.models.lines import MAX_VOCABULARY, Line, split_vocabulary
from callcenter.calls.models.model_versions import Backbone, ModelVersion, VoiceProfile
from callcenter.calls.models.patterns import E164_REGEX, SHA256_REGEX
from callcenter.calls.models.training import TrainingRun, TrainingStatus

__all__ = [
    "AdaptationRun",
    "AdaptationStatus",
    "AdaptationTrigger",
    "Agent",
    "Backbone",
    "Call",
    "CallDirection",
    "CallProtocol",
    "CallStatus",
    "Customer",
    "E164_REGEX",
    "Line",
    "MAX_VOCABULARY",
    "ModelVersion",
    "SHA256_REGEX",
    "Segment",
    "SegmentStatus",
    "Speaker",
    "TrainingRun",
    "TrainingStatus",
    "VoiceProfile",
    "split_vocabulary",
]
