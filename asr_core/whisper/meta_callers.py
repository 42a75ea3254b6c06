"""Meta-learned settings of the caller group (`cached.GROUP`, the encoder's final norm): first-order
Meta-SGD over synthetic voices x phone lines, with every utterance through the frozen encoder once.

    .venv/bin/python -m asr_core corpus --out data/wmeta-corpus --seed 2026 --train-speakers 96 \
        --accent-train-speakers 24 --dev-speakers 0 --test-speakers 0 --train-utts 24 --splits train
    .venv/bin/python -m asr_core.whisper.meta_callers --manifest data/wmeta-corpus/manifest.tsv \
        --out data/wmeta3/whisper-tiny-callers.pt --outer-steps 150 --meta-batch 4 --lines-per-speaker 2

(the shipped settings, `asr_core/checkpoints/whisper-tiny-callers.md`).

Tasks are speakers x phone lines: each speaker's `train` utterances are rendered through
`lines_per_speaker` phone lines drawn at random (`asr_core.phone_line.LINES`: band limits, noise,
codecs, levels), each rendering a task, cut into support and query sets at every outer step; the
inner loop is `steps` SGD steps with per-value step sizes from the init, on the support set's
teacher-forced loss (`cached.teacher_forced_loss`), and the query loss after them updates the init
and the (log) step sizes (first order: the inner gradients are constants).

By default the inner loop is the product's fit (`adapt.fit`, rule "meta"): the recognizer loaded
with the product's defaults, the utterances encoded as served (`adapt.WINDOW`), `adapt.META_STEPS`
steps, each on `adapt.FIT_BATCH` support utterances taken in turn, in bfloat16 where the product
fits in bfloat16 (`adapt.FIT_BF16`). `--init-from` starts from a settings file (its init and step
sizes) instead of plain Whisper.

Written as a small settings file (`write_settings`, a few KB) for exactly these weights (their
sha256); `adapt_whisper_caller(rule="meta")` uses it. Resumable: the state is saved after every
outer step next to --out (`.state`), and a rerun continues from it.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
import time

import numpy as np
import torch

from asr_core.errors import CheckpointError
from asr_core.whisper import cached

FORMAT = "asr_core.whisper-callers/1"


def write_settings(info: dict, sha256: str, out: str) -> str:
    payload = {"format": FORMAT, "backbone_sha256": sha256, "group": list(cached.GROUP), **info}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(payload, out + ".part")
    os.replace(out + ".part", out)
    return out


def read_settings(path: str, sha256: str) -> dict:
    """{"steps", "init", "step_sizes", ...} of a settings file made for the weights `sha256`."""
    if not os.path.isfile(path):
        raise CheckpointError(f"caller adaptation settings not found: {path}")
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same error to the caller
        raise CheckpointError(f"cannot read {path}: corrupt or not a settings file ({type(e).__name__})") from None
    if not isinstance(p, dict) or p.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a caller adaptation settings file")
    if p.get("backbone_sha256") != sha256:
        raise CheckpointError(f"{path}: made for other weights ({str(p.get('backbone_sha256'))[:12]})")
    for part in ("init", "step_sizes"):
        if set(p.get(part, {})) != set(cached.GROUP) or \
                not all(torch.isfinite(v).all() for v in p[part].values()):
            raise CheckpointError(f"{path}: malformed {part}")
    if not isinstance(p.get("steps"), int) or not 1 <= p["steps"] <= 50:
        raise CheckpointError(f"{path}: malformed steps")
    return p


def _speaker_tasks(rec, manifest: str, support: int, query: int, seed: int, progress, *,
                   lines_per_speaker: int = 1, served: bool = False) -> list:
    from asr_core.audio import load_audio
    from asr_core.manifest import read_manifest
    from asr_core.phone_line import LINES, render
    rows = read_manifest(manifest, ("train",))
    by_spk: dict[str, list] = {}
    for u in rows:
        by_spk.setdefault(u.speaker, []).append(u)
    rng = random.Random(seed)
    plain = cached.group_params(rec)
    tasks = []
    for spk in sorted(by_spk):
        us = by_spk[spk][: support + query]
        if len(us) < support + query:
            continue
        clean = [load_audio(u.audio, 8000).numpy() for u in us]
        tokens = cached.token_targets(rec, [u.text for u in us])
        for line in rng.sample(sorted(LINES), min(lines_per_speaker, len(LINES))):
            audios = [torch.from_numpy(render(a, LINES[line], seed=rng.randrange(1 << 30))) for a in clean]
            cache = (cached.encode_frozen(rec, audios, 8000, None, as_served=True, bucket=16) if served
                     else cached.encode_frozen(rec, audios, 8000, 1.0))
            targets = cached.make_targets(rec, cache, tokens, plain)
            tasks.append((spk, line, cache, targets))
            print(f"meta-callers: cached {spk} ({line})", file=progress, flush=True)
    return tasks


def meta_train(manifest: str, out: str, *, steps: int | None = None, support: int = 16, query: int = 8,
               outer_steps: int = 60, meta_batch: int = 2, outer_lr: float = 3e-3, first_step: float = 0.01,
               seed: int = 0, lines_per_speaker: int = 1, as_product: bool = True, init_from: str | None = None,
               progress=sys.stderr) -> str:
    """as_product: the inner loop as the product fits (module docstring); False: the first version's
    (plain Whisper float32, a 1 s trimmed window, every support utterance in every step, 6 steps)."""
    from asr_core import defaults
    from asr_core.engines import load_engine
    from asr_core.whisper import adapt
    from asr_core.whisper.recognizer import WhisperRecognizer
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    # as_product: the final pass's recognizer, loaded with the product's settings
    rec = load_engine(defaults.FINAL_BACKBONE) if as_product else WhisperRecognizer.load("whisper-tiny")
    served = as_product and rec.uses_live_margin and adapt.WINDOW == "served"
    steps = steps if steps is not None else (adapt.META_STEPS if as_product else 6)
    bf16 = as_product and adapt.FIT_BF16
    start = read_settings(init_from, rec.meta["sha256"]) if init_from else None
    state_path = out + ".state"
    config = {"manifest": os.path.abspath(manifest), "steps": steps, "support": support, "query": query,
              "meta_batch": meta_batch, "outer_lr": outer_lr, "seed": seed, "lines_per_speaker": lines_per_speaker,
              "as_product": as_product, "init_from": os.path.abspath(init_from) if init_from else None}
    state = _read_state(state_path, config)      # refused before any audio is cached
    tasks = _speaker_tasks(rec, manifest, support, query, seed, progress, lines_per_speaker=lines_per_speaker,
                           served=served)
    if not tasks:
        raise ValueError(f"{manifest}: no training speaker has {support + query} utterances")
    plain = cached.group_params(rec)
    if start is not None:
        init = {k: start["init"][k].clone().float().requires_grad_() for k in plain}
        log_lr = {k: start["step_sizes"][k].float().log().requires_grad_() for k in plain}
    else:
        init = {k: v.clone().requires_grad_() for k, v in plain.items()}
        log_lr = _initial_log_step_sizes(rec, plain, tasks[0], support, first_step)
    decoder = adapt._bf16_copy(rec.model.decoder) if bf16 else None
    opt = torch.optim.Adam([*init.values(), *log_lr.values()], lr=outer_lr)
    done = _resume(state, init, log_lr, opt)
    rng = np.random.default_rng(seed + done)
    t0 = time.perf_counter()
    with cached.frozen(rec.model):
        for step in range(done, outer_steps):
            opt.zero_grad()
            before = after = 0.0
            for j in rng.choice(len(tasks), size=min(meta_batch, len(tasks)), replace=False):
                _spk, _line, cache, targets = tasks[j]
                order = rng.permutation(support + query).tolist()
                sup, qry = order[:support], order[support:]
                p = dict(init)
                for i in range(steps):
                    leaves = {k: v.detach().requires_grad_() for k, v in p.items()}
                    batch = adapt._step_batch(sup, i) if as_product else sup
                    with adapt._fit_precision() if bf16 else contextlib.nullcontext():
                        loss = cached.teacher_forced_loss(rec, leaves, cache, targets, batch, decoder=decoder)
                    grads = torch.autograd.grad(loss, list(leaves.values()))
                    p = {k: p[k] - log_lr[k].exp() * gk.float() for k, gk in zip(p, grads)}
                q = cached.teacher_forced_loss(rec, p, cache, targets, qry) / meta_batch
                q.backward()
                after += float(q.detach())
                with torch.no_grad():
                    before += float(cached.teacher_forced_loss(rec, init, cache, targets, qry)) / meta_batch
            opt.step()
            torch.save({"init": {k: v.detach() for k, v in init.items()},
                        "log_lr": {k: v.detach() for k, v in log_lr.items()},
                        "opt": opt.state_dict(), "done": step + 1, "config": config}, state_path)
            print(f"meta-callers: step {step + 1}/{outer_steps} query loss at init {before:.3f} adapted {after:.3f}"
                  f"  {time.perf_counter() - t0:.0f}s", file=progress, flush=True)
    info = {"algo": "metasgd-fo", "steps": steps, "support": support, "query": query, "outer_steps": outer_steps,
            "speakers": len({t[0] for t in tasks}), "tasks": len(tasks), "lines": sorted({t[1] for t in tasks}),
            "window": "served" if served else "trimmed 1 s", "fit_batch": adapt.FIT_BATCH if as_product else None, "bf16": bf16,
            "init_from": os.path.basename(init_from) if init_from else None,
            "init": {k: v.detach().clone() for k, v in init.items()},
            "step_sizes": {k: v.detach().exp() for k, v in log_lr.items()}}
    return write_settings(info, rec.meta["sha256"], out)


def _initial_log_step_sizes(rec, plain: dict[str, torch.Tensor], task: tuple, support: int,
                            first_step: float) -> dict[str, torch.Tensor]:
    """Log step sizes that start where one SGD step on `task`'s support moves each value by
    ~first_step (as Adam's first step)."""
    _spk, _line, cache, targets = task
    with cached.frozen(rec.model):
        p = {k: v.clone().requires_grad_() for k, v in plain.items()}
        sup = list(range(support))
        g = torch.autograd.grad(cached.teacher_forced_loss(rec, p, cache, targets, sup), list(p.values()))
    return {k: torch.full_like(v, math.log(first_step / max(float(gi.abs().mean()), 1e-8))).requires_grad_()
            for (k, v), gi in zip(plain.items(), g)}


def _read_state(state_path: str, config: dict) -> dict | None:
    """An interrupted run's state (None: there is none). CheckpointError if it cannot be read or was
    made with other settings (`config`; the outer steps may differ: a run can be extended)."""
    if not os.path.isfile(state_path):
        return None
    try:
        st = torch.load(state_path, weights_only=True)
        int(st["done"]), st["init"], st["log_lr"], st["opt"]
    except Exception as e:  # noqa: BLE001 - any unreadable state is the same error to the caller
        raise CheckpointError(f"{state_path}: corrupt or not a meta-training state ({type(e).__name__}); "
                              "remove it to start again") from None
    if st.get("config", config) != config:
        other = sorted(k for k in config if st["config"].get(k) != config[k])
        raise CheckpointError(f"{state_path} was made with other settings ({', '.join(other)}): "
                              "remove it to start again, or choose another --out")
    return st


def _resume(st: dict | None, init: dict[str, torch.Tensor], log_lr: dict[str, torch.Tensor],
            opt: torch.optim.Optimizer) -> int:
    """Load an interrupted run's state (`_read_state`) into init, log_lr and opt; returns the outer
    steps done (0: none)."""
    if st is None:
        return 0
    with torch.no_grad():
        for k in init:
            init[k].copy_(st["init"][k])
            log_lr[k].copy_(st["log_lr"][k])
    opt.load_state_dict(st["opt"])
    return st["done"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=None, help="inner steps (default: the product's META_STEPS)")
    p.add_argument("--support", type=int, default=16)
    p.add_argument("--query", type=int, default=8)
    p.add_argument("--outer-steps", type=int, default=60)
    p.add_argument("--meta-batch", type=int, default=2)
    p.add_argument("--outer-lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lines-per-speaker", type=int, default=1, help="phone lines each speaker is rendered through")
    p.add_argument("--init-from", default=None, help="start from this settings file's init and step sizes")
    p.add_argument("--first-version", action="store_true",
                   help="the first version's inner loop (plain float32 Whisper, 1 s trimmed window, 6 steps)")
    a = p.parse_args(argv)
    for name in ("steps", "support", "query", "outer_steps", "meta_batch", "lines_per_speaker"):
        v = getattr(a, name)
        if v is not None and v < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.steps is not None and a.steps > 50:
        p.error("--steps is at most 50 (what a settings file may hold)")
    if not 0 < a.outer_lr < float("inf"):
        p.error("--outer-lr must be a positive number")
    try:
        out = meta_train(a.manifest, a.out, steps=a.steps, support=a.support, query=a.query,
                         outer_steps=a.outer_steps, meta_batch=a.meta_batch, outer_lr=a.outer_lr, seed=a.seed,
                         lines_per_speaker=a.lines_per_speaker, as_product=not a.first_version,
                         init_from=a.init_from)
    except (ValueError, CheckpointError, OSError) as e:
        print(f"meta-callers: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
