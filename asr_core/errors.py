"""The errors asr_core raises for bad input; the CLI prints them as one line."""
from __future__ import annotations


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not match the code."""


def user_errors() -> tuple[type[BaseException], ...]:
    from asr_core.audio import AudioError
    from asr_core.corpus.synth import SynthesisError
    from asr_core.manifest import ManifestError
    from asr_core.phone_line import LineError
    return (AudioError, ManifestError, CheckpointError, SynthesisError, LineError, ValueError, FileNotFoundError,
            PermissionError, IsADirectoryError)
