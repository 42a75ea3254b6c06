import hashlib
import os

from asr_core.corpus.build import CorpusConfig, build_corpus
from asr_core.manifest import read_manifest


def _tiny(out, seed=5):
    return CorpusConfig(out=str(out), seed=seed, train_speakers=2, dev_speakers=1, test_speakers=1,
                        train_utts=2, dev_utts=1, adapt_utts=1, test_utts=1, workers=2)


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            if f.endswith((".wav", ".tsv")):
                h.update(f.encode())
                h.update(open(os.path.join(root, f), "rb").read())
    return h.hexdigest()


def test_corpus_is_deterministic_and_split_by_speaker(tmp_path):
    m1 = build_corpus(_tiny(tmp_path / "a"))
    m2 = build_corpus(_tiny(tmp_path / "b"))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    rows = read_manifest(m1)
    assert {r.split for r in rows} == {"train", "dev", "adapt", "test"}
    by_split = {}
    for r in rows:
        by_split.setdefault("test" if r.split in ("adapt", "test") else r.split, set()).add(r.speaker)
    assert not (by_split["train"] & by_split["dev"]) and not (by_split["train"] & by_split["test"])
    train_text = {r.text for r in rows if r.split == "train"}
    assert not train_text & {r.text for r in rows if r.split == "test"}
    for r in rows:
        assert os.path.getsize(r.audio) > 1000 and r.text


def test_different_seed_gives_different_corpus(tmp_path):
    build_corpus(_tiny(tmp_path / "a", seed=1))
    build_corpus(_tiny(tmp_path / "b", seed=2))
    assert _digest(tmp_path / "a") != _digest(tmp_path / "b")


def test_accented_speakers_are_added_without_changing_the_rest(tmp_path):
    from dataclasses import replace

    from asr_core.corpus.build import _plan
    from asr_core.corpus.speakers import ACCENT_LANGUAGES, HELD_OUT_ACCENT_LANGUAGES

    plain = _tiny(tmp_path / "a")
    accented = replace(plain, accent_train_speakers=3, accent_test_speakers=2)
    speakers, jobs = _plan(plain)
    speakers2, jobs2 = _plan(accented)
    assert speakers2[: len(speakers)] == speakers and jobs2[: len(jobs)] == jobs
    extra = speakers2[len(speakers):]
    assert [s.split for s in extra] == ["train"] * 3 + ["test"] * 2
    for s in extra:
        lang = s.voice.split("+")[0]
        assert lang in (ACCENT_LANGUAGES if s.split == "train" else HELD_OUT_ACCENT_LANGUAGES)
    assert not set(ACCENT_LANGUAGES) & set(HELD_OUT_ACCENT_LANGUAGES)


def test_only_the_test_speakers_can_be_rendered_with_the_whole_corpus_names(tmp_path):
    """`--splits test`: the evaluation callers alone, byte for byte as in the whole corpus."""
    from dataclasses import replace
    whole = build_corpus(_tiny(tmp_path / "whole"))
    part = build_corpus(replace(_tiny(tmp_path / "part"), splits=("test",)))
    def rows(manifest, root):
        return [(r.speaker, r.split, os.path.relpath(r.audio, root), r.text) for r in read_manifest(manifest)
                if r.speaker.startswith("test")]
    expected = rows(whole, tmp_path / "whole")
    assert expected and rows(part, tmp_path / "part") == expected
    for _, _, audio, _ in expected:
        assert open(tmp_path / "whole" / audio, "rb").read() == open(tmp_path / "part" / audio, "rb").read()
    assert not (tmp_path / "part" / "audio" / "train0000").exists()


def test_unknown_splits_are_refused():
    import pytest
    with pytest.raises(ValueError, match="splits must be some of"):
        CorpusConfig(out="x", splits=("tset",))
