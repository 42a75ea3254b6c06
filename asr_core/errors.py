"""Every error asr_core raises on purpose, in one hierarchy.

`AsrError` is the base: the CLI prints any of them as one line, and the backend's bridge
(`callcenter/asr.py`) translates them into its own errors. The classes keep the built-in bases
they always had (ValueError / RuntimeError), so `except ValueError` in older callers still works.
"""
from __future__ import annotations


class AsrError(Exception):
    """Base of asr_core's deliberate errors: bad input, files, or a backbone that cannot load."""


class AudioError(AsrError, ValueError):
    """Audio that cannot be decoded or has the wrong shape or rate."""


class CheckpointError(AsrError, ValueError):
    """A checkpoint file is missing, corrupt, or does not match the code."""


class BackboneError(AsrError, ValueError):
    """An unknown backbone, or one whose pretrained weights are not installed."""


class ProfileError(AsrError, ValueError):
    """A caller's stored profile cannot be used with this model (corrupt, too big, other weights)."""


class ManifestError(AsrError, ValueError):
    """A manifest file that cannot be read."""


class LineError(AsrError, RuntimeError):
    """A phone-line simulation that failed (sox missing, a codec the build lacks)."""


class SynthesisError(AsrError, RuntimeError):
    """Speech synthesis that failed (a TTS program missing or failing)."""


class TrainingError(AsrError, RuntimeError):
    """Training that could not finish (a loss that diverged)."""


def user_errors() -> tuple[type[BaseException], ...]:
    """What the CLI reports as one line rather than a traceback."""
    # an output folder that is a file (NotADirectoryError, FileExistsError) is the user's too
    return (AsrError, ValueError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
            FileExistsError)
