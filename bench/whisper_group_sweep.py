"""Which group of Whisper's weights a caller's profile should adapt, by measured real-speech gain per
second of compute (issue 18). Prints figures; it is not a test.

    .venv/bin/python bench/whisper_group_sweep.py --manifest data/real-dev-hard/manifest.tsv

Per speaker of the manifest: supervised fits on its `adapt` utterances, WER of its `test` utterances
recognized as the product serves them (the default recognizer: the live margin's window, the
padding pooled, int8 decoder, beam search), seconds of the fit on one thread. Groups, all fitted the
same way (plain Adam, `--steps` steps on every adapt utterance, unguarded: the guard is the same for
any group and is left out so that the groups are compared at equal work; `--guarded`: as the
product fits, 2 folds judged by its supervised guard, the profile the mean of the fold fits), on the
encoder output cached once (`cached.encode_frozen`):

- norm: the encoder's final layer norm, gain and bias (768 values; the product's group);
- dec-lora-R: LoRA of rank R on the query and value projections of the decoder's cross-attention
  (4 blocks x 2 x R x 2 x 384 values); served by merging B A into a copy of the decoder, quantized
  as the product's decoder is;
- norm+dec-lora-R: both, fitted together.

The product's own fit of the norm (the meta-learned rule, guarded) is the first row for reference.
LoRA on the encoder's attention is not fitted here: each step would run the adapted encoder blocks
over every utterance again; `--encoder-block-cost` times one pass of the top encoder block (forward
and backward) over the cached utterances, the least such a step costs.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def lora_init(dec, rank: int, seed: int = 0) -> dict:
    """{weight name in the decoder: (A (rank, d), B (d, rank))}: B zero, so the start is Whisper."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = {}
    for i, b in enumerate(dec.blocks):
        for part in ("query", "value"):
            w = getattr(b.cross_attn, part).weight
            out[f"blocks.{i}.cross_attn.{part}.weight"] = (
                (torch.randn(rank, w.shape[1], generator=g) / math.sqrt(w.shape[1])).requires_grad_(),
                torch.zeros(w.shape[0], rank, requires_grad=True))
    return out


def merged(dec, lora: dict, scale: float) -> dict:
    """The decoder's weights with each LoRA delta added: {name: W + scale * B A}."""
    own = dict(dec.named_parameters())
    return {name: own[name] + scale * (b @ a) for name, (a, b) in lora.items()}


def fit_group(rec, cache, targets, group: str, steps: int, lr: float, lora_lr: float, rank: int,
              subset: list[int] | None = None):
    """-> (norm params or None, (LoRA tensors or {}, their scale)) after `steps` Adam steps on the
    cached utterances `subset` (None: all)."""
    import torch
    from torch import nn

    from asr_core.whisper import adapt as A
    from asr_core.whisper import cached
    p = {k: v.clone().requires_grad_(group.startswith("norm")) for k, v in cached.group_params(rec).items()}
    lora = lora_init(rec.model.decoder, rank) if "lora" in group else {}
    scale = 16.0 / rank if lora else 0.0

    class Loss(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = rec.model.decoder

        def forward(self):
            return cached.teacher_forced_loss(rec, p, cache, targets, subset, decoder=self.decoder)

    module = Loss()
    groups = ([{"params": list(p.values()), "lr": lr}] if group.startswith("norm") else []) + \
        ([{"params": [t for ab in lora.values() for t in ab], "lr": lora_lr}] if lora else [])
    opt = torch.optim.Adam(groups)
    with cached.frozen(rec.model):
        for _ in range(steps):
            with A._fit_precision():
                weights = {f"decoder.{k}": v for k, v in merged(rec.model.decoder, lora, scale).items()}
                loss = torch.func.functional_call(module, weights, ()) if lora else module()
            opt.zero_grad()
            loss.backward()
            opt.step()
    norm = {k: v.detach() for k, v in p.items()} if group.startswith("norm") else None
    return norm, ({k: (a.detach(), b.detach()) for k, (a, b) in lora.items()}, scale)


def deltas(fits: list) -> dict:
    """The mean LoRA delta of fits [(lora, scale)]: {weight name: mean of scale * B A}."""
    out: dict = {}
    for lora, scale in fits:
        for name, (a, b) in lora.items():
            out[name] = out.get(name, 0) + scale * (b @ a) / len(fits)
    return out


@contextmanager
def served_decoder(rec, delta: dict, int8: bool = True):
    """The recognizer with a copy of its decoder whose weights have `delta` added (float, and int8
    as the product's where `int8`): what it serves and what the guard's greedy decodes use."""
    import torch
    from torch import nn
    from torch.ao.quantization import quantize_dynamic
    if not delta:
        yield
        return
    dec = copy.deepcopy(rec.model.decoder)
    with torch.no_grad():
        own = dict(dec.named_parameters())
        for name, d in delta.items():
            own[name].add_(d)
    model, infer = rec.model, rec.infer
    float_model = copy.copy(model)
    float_model._modules = dict(model._modules)
    float_model.decoder = dec
    served = copy.copy(infer)
    served._modules = dict(infer._modules)
    if infer is model:
        served.decoder = dec
    elif int8:
        served.decoder = quantize_dynamic(dec, {nn.Linear}, dtype=torch.qint8)
    rec.model, rec.infer = float_model, served
    try:
        yield
    finally:
        rec.model, rec.infer = model, infer


def guarded(rec, cache, targets, refs: list[str], group: str, steps: int, lr: float, lora_lr: float,
            rank: int) -> tuple[bool, dict | None, dict, dict]:
    """The product's supervised guard (`adapt._guard`'s rule) around any group: 2 folds, each fitted
    on the other's utterances and its held-out utterances decoded greedily with that fit (the
    decoder with the fold's LoRA delta) and with plain Whisper -> (accepted, norm params, the mean
    LoRA delta, figures). Accepted: the mean of the fold fits."""
    import torch

    from asr_core.whisper import adapt as A
    from asr_core.whisper import cached
    n = len(refs)
    chunks = [[i for i in range(n) if i % 2 == j] for j in range(2)]
    fits = [fit_group(rec, cache, targets, group, steps, lr, lora_lr, rank, [i for i in range(n) if i not in c])
            for c in chunks]
    judged = [c[:A.GUARD_PER_FOLD] for c in chunks]
    every = [i for c in judged for i in c]
    caps = {i: 8 + 3 * len(refs[i].split()) for i in every}
    text = lambda h: rec.tokenizer.decode(h.tokens).strip()  # noqa: E731
    before = {i: text(h) for i, h in cached.greedy_capped(rec, cache, None, every, caps).items()}
    after, per_chunk = {}, []
    for c, (norm, (lora, scale)) in zip(judged, fits):
        with served_decoder(rec, deltas([(lora, scale)]), int8=False):
            after.update({i: text(h) for i, h in cached.greedy_capped(rec, cache, norm, c, caps).items()})
        refs_c = {i: refs[i] for i in c}
        per_chunk.append((A._held_out_figures({i: before[i] for i in c}, refs_c)[0],
                          A._held_out_figures({i: after[i] for i in c}, refs_c)[0]))
    r = {i: refs[i] for i in every}
    eb, words = A._held_out_figures(before, r)[:2]
    ea = A._held_out_figures(after, r)[0]
    reason = A._bounds(after, before, words)
    ok = not reason and ea < eb and all(a <= b + A.CHUNK_SLACK_WORDS for b, a in per_chunk)
    figures = {"wer_before": round(eb / words, 4), "wer_after": round(ea / words, 4), "chunks": per_chunk,
               "reason": reason}
    if not ok:
        return False, None, {}, figures
    norms = [f[0] for f in fits if f[0] is not None]
    norm = {k: torch.stack([p[k] for p in norms]).mean(0) for k in norms[0]} if norms else None
    return True, norm, deltas([f[1] for f in fits if f[1][0]]), figures


def wer(rec, audios, texts, params) -> float:
    from asr_core.metrics import word_errors
    e = n = 0
    for a, t in zip(audios, texts):
        x, y = word_errors(t, rec.transcribe(a, 8000, params=params, word_timestamps=False).text)
        e, n = e + x, n + y
    return e / max(n, 1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", required=True)
    p.add_argument("--groups", default="norm,dec-lora-4,dec-lora-8,norm+dec-lora-4")
    p.add_argument("--steps", type=int, default=10, help="Adam steps of every group (default 10)")
    p.add_argument("--lr", type=float, default=0.01, help="Adam step of the norm (default 0.01, the product's plain rule)")
    p.add_argument("--lora-lr", type=float, default=0.002, help="Adam step of the LoRA tensors (default 0.002)")
    p.add_argument("--speakers", default="", help="comma-separated speakers (default: all)")
    p.add_argument("--guarded", action="store_true",
                   help="fit each group as the product does: 2 folds, the supervised guard, the mean of the fold fits")
    p.add_argument("--encoder-block-cost", action="store_true",
                   help="also time one forward+backward of the top encoder block over the cached utterances")
    a = p.parse_args()
    groups = [g.strip() for g in a.groups.split(",") if g.strip()]
    for g in groups:
        if g != "norm" and not (g.startswith("dec-lora-") or g.startswith("norm+dec-lora-")) or \
                ("lora" in g and not (g.rsplit("-", 1)[1].isdigit() and int(g.rsplit("-", 1)[1]) >= 1)):
            p.error(f"unknown group {g!r}: norm, dec-lora-R or norm+dec-lora-R (R a rank of at least 1)")
    if a.steps < 1:
        p.error("--steps must be at least 1")
    if not (a.lr > 0 and a.lora_lr > 0):
        p.error("--lr and --lora-lr must be positive")
    import torch

    from asr_core import defaults
    from asr_core.audio import load_audio
    from asr_core.engines import load_engine
    from asr_core.errors import ManifestError
    from asr_core.manifest import read_manifest
    from asr_core.whisper import adapt as A
    from asr_core.whisper import cached
    torch.set_num_threads(1)
    try:
        rows = read_manifest(a.manifest, ("adapt", "test"))
    except ManifestError as e:
        p.error(str(e))
    speakers = sorted({u.speaker for u in rows})
    if a.speakers:
        speakers = [s for s in speakers if s in a.speakers.split(",")]
    if not speakers:
        p.error(f"no speaker of {a.manifest} to adapt{' among ' + a.speakers if a.speakers else ''}")
    rec = load_engine(defaults.FINAL_BACKBONE)
    rec.padding_context()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    table: dict[str, list] = {}
    for spk in speakers:
        ad = [u for u in rows if u.speaker == spk and u.split == "adapt"]
        te = [u for u in rows if u.speaker == spk and u.split == "test"]
        if not ad or not te:
            continue
        ad_audio, te_audio = [load_audio(u.audio, 8000) for u in ad], [load_audio(u.audio, 8000) for u in te]
        te_text = [u.text for u in te]
        base = wer(rec, te_audio, te_text, None)
        words = sum(len(t.split()) for t in te_text)
        print(f"{spk}: {len(ad)} adapt, {len(te)} test utterances ({words} words); none {base:.2%}", flush=True)
        A.forget_encoded()
        r = A.adapt_whisper_caller(rec, ad_audio, [u.text for u in ad], 8000)
        row = ("norm, meta-learned, guarded (product)", 768, wer(rec, te_audio, te_text, r.params), r.metrics["seconds"])
        table.setdefault(row[0], []).append((base, *row[2:], words))
        print(f"  {row[0]:<40} WER {row[2]:.2%}  {row[3]:.1f} s  accepted {r.accepted}", flush=True)
        refs = [" ".join(u.text.split()) for u in ad]
        for g in groups:
            t0 = time.perf_counter()
            cache = cached.encode_frozen(rec, ad_audio, 8000, None, as_served=True, bucket=16)
            targets = cached.make_targets(rec, cache, cached.token_targets(rec, refs), cached.group_params(rec))
            rank = int(g.rsplit("-", 1)[1]) if "lora" in g else 1
            if a.guarded:
                accepted, norm, delta, figures = guarded(rec, cache, targets, refs, g, a.steps, a.lr, a.lora_lr, rank)
                size = (768 if "norm" in g else 0) + (16 * 384 * rank if "lora" in g else 0)
                extra = f"accepted {accepted} (held-out {figures['wer_before']} -> {figures['wer_after']}, " \
                        f"chunks {figures['chunks']}{', ' + figures['reason'] if figures['reason'] else ''})"
            else:
                norm, (lora, scale) = fit_group(rec, cache, targets, g, a.steps, a.lr, a.lora_lr, rank)
                delta = deltas([(lora, scale)]) if lora else {}
                size = (768 if norm is not None else 0) + sum(x.numel() + y.numel() for x, y in lora.values())
                extra = ""
            seconds = time.perf_counter() - t0
            with served_decoder(rec, delta):
                w = wer(rec, te_audio, te_text, norm)
            name = f"{g}, Adam x {a.steps}, {'guarded' if a.guarded else 'unguarded'}"
            table.setdefault(name, []).append((base, w, seconds, words))
            print(f"  {name:<40} WER {w:.2%}  {seconds:.1f} s  ({size} values, {size * 4 / 1024:.0f} KB)  {extra}",
                  flush=True)
        if a.encoder_block_cost:
            cache = cached.encode_frozen(rec, ad_audio, 8000, None, as_served=True, bucket=16)
            block = rec.model.encoder.blocks[-1]
            t0 = time.perf_counter()
            with A._fit_precision():
                x = [h.detach().clone().requires_grad_() for h in cache.hidden]
                out = sum(block(h)[0].float().pow(2).mean() for h in x)
            out.backward()
            print(f"  top encoder block, forward + backward over the cached utterances (own positions only): "
                  f"{time.perf_counter() - t0:.2f} s per step", flush=True)
    print()
    print(f"{'group':<42} {'WER':>8} {'relative':>9} {'s/caller':>9} {'rel. pts per s':>15}")
    for name, rs in table.items():
        base = sum(b * n for b, _, _, n in rs) / sum(n for *_, n in rs)
        w = sum(x * n for _, x, _, n in rs) / sum(n for *_, n in rs)
        s = sum(x for _, _, x, _ in rs) / len(rs)
        rel = (w - base) / base if base else 0.0
        print(f"{name:<42} {w:>8.2%} {rel:>+9.1%} {s:>9.1f} {-100 * rel / s:>15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
