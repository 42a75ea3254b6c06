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
