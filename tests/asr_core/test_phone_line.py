"""Hard telephone lines for evaluation: a manifest's real speech rendered through noise, band limits
and codecs, deterministically."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from asr_core.audio import load_audio
from asr_core.cli import main
from asr_core.manifest import read_manifest
from asr_core.phone_line import LINES, LineError, degrade_manifest


@pytest.fixture(scope="module")
def small_manifest(real_dev, tmp_path_factory):
    """Three of the development set's prompts (2 adapt, 1 test)."""
    rows = read_manifest(str(real_dev))
    picked = [u for u in rows if u.split == "adapt"][:2] + [u for u in rows if u.split == "test"][:1]
    path = tmp_path_factory.mktemp("small") / "manifest.tsv"
    path.write_text("speaker\tsplit\taudio\ttext\n" + "".join(f"{u.speaker}\t{u.split}\t{u.audio}\t{u.text}\n"
                                                             for u in picked))
    return path


@pytest.mark.parametrize("line", sorted(LINES))
def test_every_line_keeps_the_rows_and_changes_the_audio_reproducibly(small_manifest, tmp_path, line):
    first = degrade_manifest(str(small_manifest), line, str(tmp_path / "a"))
    again = degrade_manifest(str(small_manifest), line, str(tmp_path / "b"))
    before, after, after_again = (read_manifest(p) for p in (str(small_manifest), first, again))
    assert [(u.speaker, u.split, u.text) for u in after] == [(u.speaker, u.split, u.text) for u in before]
    for src, out, out2 in zip(before, after, after_again):
        info = sf.info(out.audio)
        assert info.samplerate == 8000 and info.channels == 1
        x, y = load_audio(src.audio, 8000).numpy(), load_audio(out.audio, 8000).numpy()
        assert abs(len(y) - len(x)) < 400  # codecs pad by at most a frame or two
        n = min(len(x), len(y))
        assert np.abs(y[:n] - x[:n]).mean() > 1e-3  # the line changed the audio
        assert np.array_equal(y, load_audio(out2.audio, 8000).numpy())  # the same line, the same audio


def test_a_hard_line_adds_noise_where_the_clean_prompt_is_silent(small_manifest, tmp_path):
    hard = read_manifest(degrade_manifest(str(small_manifest), "hard", str(tmp_path)))
    clean = read_manifest(str(small_manifest))
    x, y = load_audio(clean[0].audio, 8000).numpy(), load_audio(hard[0].audio, 8000).numpy()
    quiet = np.abs(x[: min(len(x), len(y))]) < 1e-3
    assert quiet.sum() > 400 and np.sqrt(np.mean(y[: len(quiet)][quiet] ** 2)) > 3e-3


def test_unknown_lines_and_bad_manifests_are_clear_errors(small_manifest, tmp_path, capsys):
    with pytest.raises(LineError, match="unknown line 'dialup'"):
        degrade_manifest(str(small_manifest), "dialup", str(tmp_path))
    assert main(["phone-line", "--manifest", str(tmp_path / "none.tsv"), "--line", "hard",
                 "--out", str(tmp_path / "o")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["phone-line", "--manifest", str(small_manifest), "--line", "dialup", "--out", str(tmp_path)])
