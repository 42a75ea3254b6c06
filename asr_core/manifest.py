"""The manifest: TSV with header `speaker	split	audio	text`.

`audio` is a WAV/FLAC path relative to the manifest's folder, any sample rate
(resampled on load). Used by every tool here and by users with real recordings.
"""
from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass

from asr_core.errors import ManifestError  # noqa: F401  (raised here; importable from here)

SPLITS = ("train", "dev", "adapt", "test")
HEADER = ("speaker", "split", "audio", "text")


@dataclass(frozen=True)
class Utterance:
    speaker: str
    split: str
    audio: str   # absolute path
    text: str


def speaker_pattern(pattern: str) -> re.Pattern:
    """A regular expression selecting speakers by id (searched, not matched: 'testacc' selects every id
    containing it); a bad one is a ManifestError that names it."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ManifestError(f"bad speaker pattern {pattern!r}: {exc}") from None


def read_manifest(path: str, splits: tuple[str, ...] | None = None, speakers: str = "") -> list[Utterance]:
    """Rows of the manifest (optionally only some splits, and only speakers whose id the regular
    expression `speakers` finds a match in), with absolute audio paths."""
    wanted = speaker_pattern(speakers) if speakers else None
    if not os.path.isfile(path):
        raise ManifestError(f"manifest not found: {path}")
    root = os.path.dirname(os.path.abspath(path))
    try:
        return _read_rows(path, root, splits, wanted)
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None


def _read_rows(path: str, root: str, splits: tuple[str, ...] | None, wanted) -> list[Utterance]:
    out: list[Utterance] = []
    # utf-8-sig: a byte-order mark (as some editors save) is not part of the header
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != HEADER:
            raise ManifestError(f"{path}: expected header {'<TAB>'.join(HEADER)!r}, got {header!r}")
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 4:
                raise ManifestError(f"{path}:{lineno}: expected 4 tab-separated fields, got {len(row)}")
            speaker, split, audio, text = (c.strip() for c in row)
            if split not in SPLITS:
                raise ManifestError(f"{path}:{lineno}: split must be one of {SPLITS}, got {split!r}")
            if not speaker or not audio:
                raise ManifestError(f"{path}:{lineno}: empty speaker or audio path")
            if not text:
                raise ManifestError(f"{path}:{lineno}: empty text (the words the audio says)")
            if (splits is None or split in splits) and (wanted is None or wanted.search(speaker)):
                out.append(Utterance(speaker, split, os.path.join(root, audio), text))
    return out


def write_manifest(path: str, rows: list[tuple[str, str, str, str]]) -> None:
    tmp = path + ".part"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write("\t".join(HEADER) + "\n")
        for row in rows:
            if any("\t" in c or "\n" in c for c in row):
                raise ManifestError(f"tab or newline inside a manifest field: {row!r}")
            f.write("\t".join(row) + "\n")
    os.replace(tmp, path)


def speakers_with_tests(rows: list, manifest: str, max_speakers: int = 0) -> list[str]:
    """The speakers with `test` utterances (the first `max_speakers`); none is an error."""
    found = sorted({u.speaker for u in rows if u.split == "test"})[: max_speakers or None]
    if not found:
        raise ValueError(f"{manifest}: no speaker (of those selected) has test utterances to evaluate adaptation on")
    return found
