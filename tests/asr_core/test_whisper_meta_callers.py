"""Meta-training of the caller group (`asr_core.whisper.meta_callers`) on a tiny synthetic corpus:
the inner loop is the product's fit (window, steps, fit batch, precision), tasks are speakers x
phone lines, a run resumes from its state, and bad flags or files get a clear error. The shipped
weights, a real corpus render; a tiny config, never a full training run."""
import pytest
import torch

from asr_core.whisper import adapt as A
from asr_core.whisper import cached
from asr_core.whisper import meta_callers as M

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from asr_core.corpus.build import CorpusConfig, build_corpus
    out = tmp_path_factory.mktemp("meta-corpus")
    return build_corpus(CorpusConfig(out=str(out / "c"), seed=11, train_speakers=2, dev_speakers=0, test_speakers=0,
                                     train_utts=6, splits=("train",), workers=1))


def _shipped() -> str:
    import os
    return os.path.join(os.path.dirname(os.path.abspath(A.__file__)), "..", "checkpoints", "whisper-tiny-callers.pt")


def test_meta_training_fits_as_the_product_does_over_speakers_times_lines_and_resumes(corpus, tmp_path):
    import io
    out = str(tmp_path / "callers.pt")
    log = io.StringIO()
    path = M.meta_train(corpus, out, support=4, query=2, outer_steps=2, meta_batch=2, lines_per_speaker=2,
                        init_from=_shipped(), progress=log)
    from asr_core import defaults
    from asr_core.engines import load_engine
    rec = load_engine(defaults.FINAL_BACKBONE)
    got = M.read_settings(path, rec.meta["sha256"])
    shipped = M.read_settings(_shipped(), rec.meta["sha256"])
    assert got["tasks"] == 4 and got["speakers"] == 2 and len(got["lines"]) >= 2
    assert got["window"] == ("served" if rec.uses_live_margin and A.WINDOW == "served" else "trimmed 1 s")
    assert got["steps"] == A.META_STEPS and got["fit_batch"] == A.FIT_BATCH and got["bf16"] == A.FIT_BF16
    assert got["init_from"] == "whisper-tiny-callers.pt"
    # it started from the shipped settings and moved them
    moved = max(float((got["init"][k] - shipped["init"][k]).abs().max()) for k in cached.GROUP)
    assert 0 < moved < 1
    assert all(torch.all(v > 0) for v in got["step_sizes"].values())
    assert "step 2/2" in log.getvalue()
    # a rerun with more outer steps continues from the saved state: only the new step runs
    log = io.StringIO()
    M.meta_train(corpus, out, support=4, query=2, outer_steps=3, meta_batch=2, lines_per_speaker=2,
                 init_from=_shipped(), progress=log)
    assert "step 3/3" in log.getvalue() and "step 1/3" not in log.getvalue()
    assert torch.load(out + ".state", weights_only=True)["done"] == 3


def test_meta_training_refuses_bad_flags_and_files_with_a_clear_error(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        M.main(["--manifest", corpus, "--out", str(tmp_path / "x.pt"), "--outer-steps", "0"])
    assert e.value.code == 2 and "--outer-steps must be at least 1" in capsys.readouterr().err
    for lr in ("-1", "inf", "nan"):
        with pytest.raises(SystemExit) as e:
            M.main(["--manifest", corpus, "--out", str(tmp_path / "x.pt"), "--outer-lr", lr])
        assert e.value.code == 2 and "--outer-lr must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        M.main(["--manifest", corpus, "--out", str(tmp_path / "x.pt"), "--steps", "51"])
    assert e.value.code == 2 and "--steps is at most 50" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a settings file")
    assert M.main(["--manifest", corpus, "--out", str(tmp_path / "x.pt"), "--outer-steps", "1", "--support", "4",
                   "--query", "2", "--init-from", str(junk)]) == 2
    assert "corrupt or not a settings file" in capsys.readouterr().err
    # too few utterances per speaker for support + query: no task, a clear error, nothing written
    assert M.main(["--manifest", corpus, "--out", str(tmp_path / "y.pt"), "--outer-steps", "1"]) == 2
    assert "no training speaker has 24 utterances" in capsys.readouterr().err
    assert not (tmp_path / "y.pt").exists() and not (tmp_path / "x.pt").exists()


def test_a_meta_training_state_that_is_corrupt_or_from_other_settings_is_refused_before_any_work(corpus, tmp_path,
                                                                                              capsys):
    out = tmp_path / "callers.pt"
    args = ["--manifest", corpus, "--out", str(out), "--outer-steps", "1", "--support", "4", "--query", "2"]
    assert M.main(args) == 0 and (tmp_path / "callers.pt.state").exists()
    kept = (tmp_path / "callers.pt.state").read_bytes()
    capsys.readouterr()
    # the same run with other settings would mix two runs: refused, the state untouched
    assert M.main(args[:-4] + ["--support", "4", "--query", "2", "--lines-per-speaker", "2"]) == 2
    err = capsys.readouterr().err
    assert "was made with other settings (lines_per_speaker)" in err and "meta-callers: cached" not in err
    assert (tmp_path / "callers.pt.state").read_bytes() == kept
    (tmp_path / "callers.pt.state").write_bytes(b"not a state")
    assert M.main(args) == 2
    assert "corrupt or not a meta-training state" in capsys.readouterr().err
