"""The `python -m asr_core` CLI answers bad input with one clear line and exit status 2."""
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf


def run(*args, timeout=120):
    p = subprocess.run([sys.executable, "-m", "asr_core", *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def assert_clean_error(rc, err, pattern):
    assert rc == 2, err
    assert "Traceback" not in err
    assert pattern in err


def test_transcribe_missing_file():
    rc, _, err = run("transcribe", "/no/such.wav")
    assert_clean_error(rc, err, "error: audio file not found: /no/such.wav")


def test_transcribe_corrupt_and_truncated_audio(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt garbage")
    rc, _, err = run("transcribe", str(bad))
    assert_clean_error(rc, err, "cannot decode audio")


def test_transcribe_corrupt_checkpoint(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32), 8000)
    ck = tmp_path / "broken.pt"
    ck.write_bytes(b"\x80\x02not a torch file")
    rc, _, err = run("transcribe", str(wav), "--checkpoint", str(ck))
    assert_clean_error(rc, err, "corrupt or not a checkpoint")


def test_transcribe_silence_and_stereo_16k_give_text_not_errors(tmp_path):
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(16000, dtype=np.float32), 8000)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.zeros((16000, 2), dtype=np.float32), 16000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 8000)
    rc, out, err = run("transcribe", str(silence), str(stereo), str(empty))
    assert rc == 0, err
    lines = out.strip("\n").split("\n")
    assert len(lines) == 3 and all(line.split("\t")[1] == "" for line in lines)


@pytest.mark.parametrize("args, pattern", [
    (["corpus", "--out", "x", "--workers", "0"], "expected a number >= 1"),
    (["corpus", "--out", "x", "--splits", "tset"], "splits must be some of"),
    (["train", "--manifest", "m.tsv", "--out", "o", "--epochs", "many"], "expected a whole number"),
    (["evaluate", "--manifest", "m.tsv", "--split", "nope"], "invalid choice"),
    (["evaluate", "--manifest", "m.tsv", "--speakers", "test[0"], "bad speaker pattern 'test[0'"),
    (["evaluate", "--manifest", "m.tsv", "--trim-seconds", "2x"], "expected seconds or 'none', got '2x'"),
    (["evaluate", "--manifest", "m.tsv", "--trim-seconds", "45"], "expected seconds in [0, 30] or 'none', got 45"),
    (["evaluate", "--manifest", "m.tsv", "--live-margin-seconds", "-1"], "expected seconds in [0, 30] or 'none'"),
    (["evaluate", "--manifest", "m.tsv", "--live-margin-seconds", "nan"], "expected seconds in [0, 30] or 'none'"),
    (["phone-line", "--manifest", "m.tsv", "--line", "dialup", "--out", "o"], "invalid choice"),
    (["phone-line", "--manifest", "m.tsv", "--line", "hard", "--out", ""], "got an empty one"),
    (["evaluate", "--manifest", "m.tsv", "--json", " "], "got an empty one"),
    (["evaluate", "--manifest", "m.tsv", "--checkpoint", ""], "got an empty one"),
    (["evaluate", "--manifest", "m.tsv", "--threads", "1000000"], "expected a number from 1 to 256"),
    (["train", "--manifest", "m.tsv", "--out", "o", "--threads", "999"], "expected a number from 0 to 256"),
    (["train", "--manifest", "m.tsv", "--out", "o", "--lr", "nan"], "expected a number > 0, got nan"),
    (["meta-train", "--manifest", "m.tsv", "--out", "o", "--outer-lr", "-1"], "expected a number > 0, got -1"),
    (["meta-train", "--manifest", "m.tsv", "--out", "o", "--min-confidence", "7"], "expected a number in [0, 1], got 7"),
    (["meta-train-whisper", "--manifest", "m.tsv", "--out", "o", "--inner-lr", "inf"], "expected a number > 0, got inf"),
    (["meta-train-whisper", "--manifest", "m.tsv", "--out", "o", "--trim-seconds", "none"], "expected seconds in [0, 30], got 'none'"),
    pytest.param(["train", "--manifest", "m.tsv", "--out", "o", "--device", "cuda"], "no CUDA GPU is usable here",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_flags(args, pattern):
    rc, _, err = run(*args)
    assert_clean_error(rc, err, pattern)


def test_evaluate_missing_and_malformed_manifest(tmp_path):
    rc, _, err = run("evaluate", "--manifest", str(tmp_path / "none.tsv"), "--decoder", "greedy")
    assert_clean_error(rc, err, "manifest not found")
    m = tmp_path / "m.tsv"
    m.write_text("spk\taudio\n")
    rc, _, err = run("evaluate", "--manifest", str(m), "--decoder", "greedy")
    assert_clean_error(rc, err, "expected header")


def test_evaluate_adapt_writes_the_per_method_table(tmp_path):
    """`evaluate --adapt all` on a tiny corpus (one unseen accented caller): every method that has a
    checkpoint gets a WER, per-speaker WER and seconds per speaker in the issue's JSON shape."""
    import json

    from asr_core.corpus.build import CorpusConfig, build_corpus

    manifest = build_corpus(CorpusConfig(out=str(tmp_path / "c"), seed=3, train_speakers=0, dev_speakers=0,
                                         test_speakers=0, accent_test_speakers=1, adapt_utts=4, test_utts=2,
                                         workers=1))
    out = tmp_path / "eval.json"
    rc, stdout, err = run("evaluate", "--backbone", "small", "--manifest", manifest, "--adapt", "all",
                          "--meta-dir", str(tmp_path / "none"), "--json", str(out), "--decoder", "greedy", timeout=600)
    assert rc == 0, err
    table = json.loads(out.read_text())["adapt"]
    assert {"none", "finetune", "lhuc", "label-free", "supervised"} <= set(table)
    for method, row in table.items():
        assert 0.0 <= row["wer"] <= 1.5 and 0.0 <= row["wer_unadapted"] <= 1.5, (method, row)
        assert set(row["speakers"]) == {"testacc0000"}
        assert row["seconds_per_speaker"] >= 0.0
    # each row's own model before adaptation: the shipped model for the product's modes
    assert table["supervised"]["wer_unadapted"] == table["label-free"]["wer_unadapted"] == table["none"]["wer"]
    assert table["none"]["wer_unadapted"] == table["none"]["wer"]
    assert table["supervised"]["seconds_per_speaker"] > 0.0
    assert "supervised" in stdout and "not found, method maml skipped" in err
    # --speakers: only the callers it selects are evaluated; selecting none is a clear error
    rc, _, err = run("evaluate", "--backbone", "small", "--manifest", manifest, "--adapt", "supervised",
                     "--speakers", "^test0", "--decoder", "greedy")
    assert_clean_error(rc, err, "no utterances in split 'test' of speakers matching '^test0'")


def test_evaluate_rejects_a_bad_finetune_rate(tmp_path):
    rc, _, err = run("evaluate", "--backbone", "small", "--manifest", str(tmp_path / "m.tsv"), "--adapt", "all",
                     "--finetune-lr", "0")
    assert_clean_error(rc, err, "expected a number > 0, got 0")
    rc, _, err = run("meta-train", "--manifest", "m.tsv", "--out", str(tmp_path), "--adapter-lr", "nan")
    assert_clean_error(rc, err, "expected a number > 0, got nan")


def test_no_samples_at_any_rate_give_an_empty_transcript(tmp_path):
    """A file with a header and no samples, at a rate the recognizer resamples from."""
    empty16 = tmp_path / "empty16.wav"
    sf.write(empty16, np.zeros(0, dtype=np.float32), 16000)
    rc, out, err = run("transcribe", str(empty16))
    assert rc == 0 and "Traceback" not in err, err
    assert out == "\n"


def test_an_output_folder_that_is_a_file_is_refused(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32), 8000)
    (tmp_path / "m.tsv").write_text(f"speaker\tsplit\taudio\ttext\ns\ttest\t{wav}\thello\n")
    (tmp_path / "afile").write_text("not a folder")
    rc, _, err = run("phone-line", "--manifest", str(tmp_path / "m.tsv"), "--line", "ulaw", "--out", str(tmp_path / "afile"))
    assert_clean_error(rc, err, "error:")
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_transcribe_uses_the_products_recognizer_unless_told_otherwise(real_dev):
    """Without --backbone, the product's final pass (Whisper tiny with its settings, as `evaluate`
    without --backbone), not the small synthetic-voice model (92 % WER on real speech)."""
    from asr_core.manifest import read_manifest
    from asr_core.metrics import word_errors
    rows = read_manifest(str(real_dev), ("test",))[:3]
    rc, out, err = run("transcribe", *[u.audio for u in rows])
    assert rc == 0, err
    texts = [line.split("\t")[1] for line in out.strip("\n").split("\n")]
    errors = sum(word_errors(u.text, t)[0] for u, t in zip(rows, texts))
    assert errors <= 2, list(zip([u.text for u in rows], texts))
    rc, _, err = run("transcribe", rows[0].audio, "--decoder", "greedy")
    assert_clean_error(rc, err, "--decoder is the small model's (--backbone small)")
    rc, out, err = run("transcribe", rows[0].audio, "--backbone", "small", "--decoder", "greedy")
    assert rc == 0, err
