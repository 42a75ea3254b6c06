import pytest
import torch

from asr_core.small.checkpoint import load_checkpoint, save_checkpoint
from asr_core.errors import CheckpointError
from asr_core.small.model import ModelConfig, StreamingCTC


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    m = StreamingCTC(ModelConfig(d_model=16, n_blocks=2, right_context=(1, 0))).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(m, str(path), meta={"note": "x"})
    return m, path


def test_round_trip_keeps_outputs(saved):
    m, path = saved
    loaded, meta = load_checkpoint(str(path))
    audio = torch.randn(3000) * 0.2
    with torch.no_grad():
        a, _ = m(audio[None], torch.tensor([3000]))
        b, _ = loaded(audio[None], torch.tensor([3000]))
    assert meta["note"] == "x" and len(meta["sha256"]) == 64
    assert torch.allclose(a, b, atol=5e-2)  # weights stored in float16


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("mutilate", [
    lambda b: b[: len(b) // 2],          # truncated
    lambda b: b"\x00" * 100,            # garbage
    lambda b: b"",                      # empty
])
def test_corrupt_checkpoint_files(saved, mutilate):
    _, path = saved
    path.write_bytes(mutilate(path.read_bytes()))
    with pytest.raises(CheckpointError, match="corrupt|not a checkpoint"):
        load_checkpoint(str(path))


def test_tampered_weights_fail_the_sha256(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["head.bias"] += 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(str(path))


def test_mismatched_config(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    payload["config"]["d_model"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="does not match the model code"):
        load_checkpoint(str(path))


def test_not_our_format(tmp_path):
    p = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, p)
    with pytest.raises(CheckpointError, match="not an asr_core checkpoint"):
        load_checkpoint(str(p))


@pytest.mark.parametrize("sizes", [0.5, "tensors"])
def test_adaptation_section_round_trips_and_is_covered_by_the_hash(saved, tmp_path, sizes):
    m, _ = saved
    if sizes == "tensors":
        own = dict(m.named_parameters())
        sizes = {k: torch.full_like(own[k], 0.3) for k in m.adaptive_parameter_names()}
    path = tmp_path / "meta.pt"
    save_checkpoint(m, str(path), adapt={"algo": "metasgd", "steps": 3, "step_sizes": sizes})
    _, meta = load_checkpoint(str(path))
    assert meta["adapt"]["steps"] == 3
    payload = torch.load(path, weights_only=True)
    payload["adapt"]["steps"] = 4
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(str(path))


def test_adaptation_init_is_checked_and_covered_by_the_hash(saved, tmp_path):
    m, _ = saved
    m = m.with_adapters(2)
    init = {k: torch.full_like(v, 0.1) for k, v in dict(m.named_parameters()).items()
            if k in m.adaptive_parameter_names()}
    path = tmp_path / "init.pt"
    save_checkpoint(m, str(path), adapt={"algo": "metasgd", "steps": 3, "step_sizes": 0.5, "init": init})
    _, meta = load_checkpoint(str(path))
    assert set(meta["adapt"]["init"]) == set(init)
    payload = torch.load(path, weights_only=True)
    payload["adapt"]["init"]["blocks.0.ff1_b"] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(str(path))
    bad = dict(init, **{"blocks.0.ff1_b": torch.zeros(3)})
    save_checkpoint(m, str(path), adapt={"algo": "metasgd", "steps": 3, "step_sizes": 0.5, "init": bad})
    with pytest.raises(CheckpointError, match="adaptation init does not match the model's adaptive group"):
        load_checkpoint(str(path))


def test_label_free_section_is_checked_and_covered_by_the_hash(saved, tmp_path):
    m, _ = saved
    own = dict(m.named_parameters())
    init = {k: torch.full_like(own[k], 0.1) for k in m.adaptive_parameter_names()}
    sizes = {k: torch.full_like(own[k], 0.2) for k in m.adaptive_parameter_names()}
    section = {"algo": "metasgd", "steps": 3, "step_sizes": 0.5, "init": init,
               "label_free": {"algo": "metasgd", "steps": 2, "step_sizes": sizes, "init": init}}
    path = tmp_path / "lf.pt"
    digest = save_checkpoint(m, str(path), adapt=section)
    _, meta = load_checkpoint(str(path))
    assert meta["adapt"]["label_free"]["steps"] == 2 and set(meta["adapt"]["label_free"]["init"]) == set(init)
    # the section is part of the model version: the same file without it is another version
    assert save_checkpoint(m, str(tmp_path / "plain.pt"), adapt={k: v for k, v in section.items()
                                                                 if k != "label_free"}) != digest
    payload = torch.load(path, weights_only=True)
    payload["adapt"]["label_free"]["step_sizes"]["input_adapter.bias"] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(str(path))
    bad = dict(section, label_free=dict(section["label_free"], init=dict(init, **{"input_adapter.bias": torch.zeros(3)})))
    save_checkpoint(m, str(path), adapt=bad)
    with pytest.raises(CheckpointError, match="label-free adaptation init does not match the model's adaptive group"):
        load_checkpoint(str(path))
    nan = dict(section, label_free=dict(section["label_free"],
                                        step_sizes=dict(sizes, **{"input_adapter.bias": torch.full((64,), float("nan"))})))
    save_checkpoint(m, str(path), adapt=nan)
    with pytest.raises(CheckpointError, match="label-free adaptation step sizes do not match"):
        load_checkpoint(str(path))


def _rehashed(path, edit):
    """The checkpoint at `path` edited by `edit(payload)`, its sha256 recomputed where the weights
    still hash (so that only the edit, not the hash, can make it fail)."""
    from asr_core.checkpoint import state_sha256
    payload = torch.load(path, weights_only=True)
    edit(payload)
    try:
        payload["sha256"] = state_sha256(payload["state_dict"])
    except (AttributeError, TypeError):
        pass
    torch.save(payload, path)


@pytest.mark.parametrize("edit, message", [
    (lambda p: p.update(meta=5), "meta section is not a mapping"),
    (lambda p: p.update(meta="text"), "meta section is not a mapping"),
    (lambda p: p["meta"].update(lm_weight="abc"), "lm_weight must be a finite number"),
    (lambda p: p["meta"].update(lm_weight=float("nan")), "lm_weight must be a finite number"),
    (lambda p: p["state_dict"].update(x="a string"), "no weights"),
    (lambda p: p["state_dict"].update({7: torch.zeros(1)}), "no weights"),
    (lambda p: p["state_dict"]["head.bias"].fill_(float("nan")), "NaN or infinite"),
    (lambda p: p["state_dict"]["head.bias"].fill_(float("inf")), "NaN or infinite"),
])
def test_malformed_sections_outside_the_hash_fail_clearly(saved, edit, message):
    """Sections the sha256 does not cover (meta), weights that are not tensors, and weights that
    hash right but are not numbers: a CheckpointError naming the file, never a traceback."""
    _, path = saved
    _rehashed(path, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(str(path))
    assert str(path) in str(err.value)
