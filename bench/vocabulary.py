"""Per-line vocabulary: the WER on the listed words, and on everything, with and without the list
(Whisper prompt biasing: ``WhisperRecognizer.transcribe(prompt=...)``). Prints figures; not a test.

    .venv/bin/python bench/vocabulary.py                                   # products + real-speech control
    .venv/bin/python bench/vocabulary.py --manifest data/real-dev/manifest.tsv --backbone whisper-tiny

Two sets, chosen before looking at results:

1. **Product sentences**: 12 call-center sentences, each with one or two made-up product names from
   the list (``VOCABULARY``), spoken by four synthetic voices (festival's HTS and diphone voices,
   flite's slt and rms) over a mu-law line: 48 utterances. Synthetic speech: this measures what the
   list does to names the model has never heard, not the recognizer's accuracy on real callers.
2. **Control**: the real speaker's 67 development ``test`` prompts (none of which says a listed word),
   with and without the same list: whether the prompt makes the recognizer worse on everything else
   (Whisper can echo a prompt into the transcript).

Recognizer: the product's final pass (``asr_core.engines.load_engine`` with asr_core's defaults:
beam 5, float32, the full window), the list given as ``prompt``.

Reported: the listed-word error rate (listed-word occurrences in the reference that the transcript
does not contain, case-insensitive, over all occurrences), the WER of the product sentences and the
WER of the control, each with and without the list, and the seconds per utterance.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCABULARY = ["Zentrix", "FlexPay", "Quorvo", "Velmora", "Brightlane", "Optivox", "Kalmera", "Trusdale"]
SENTENCES = [
    "I would like to upgrade to the Zentrix FlexPay plan please",
    "my Quorvo router keeps dropping the connection",
    "can you move my Velmora subscription to next month",
    "I was charged twice for Brightlane last week",
    "the Optivox app will not let me log in",
    "is the Kalmera offer still available for new customers",
    "please cancel my Trusdale insurance",
    "I paid with FlexPay but the order never arrived",
    "does the Zentrix bundle include the Optivox speaker",
    "my Velmora card was declined at the store",
    "I need a replacement for my Quorvo modem",
    "how much does Brightlane cost with Kalmera",
]


def _voices():
    from asr_core.corpus.speakers import Speaker

    base = dict(split="test", rate=1.0, pitch=50, formant=1.0, pitch_cents=0, codec="ulaw", amr_mode=0,
                snr_db=30.0, gain_db=-3.0, band_low=300, band_high=3400)  # fmt: skip
    return [
        Speaker(id="fest-slt", engine="festival", voice="cmu_us_slt_arctic_hts", **base),
        Speaker(id="fest-kal", engine="festival", voice="kal_diphone", **base),
        Speaker(id="flite-slt", engine="flite", voice="slt", **base),
        Speaker(id="flite-rms", engine="flite", voice="rms", **base),
    ]


def listed_word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(listed-word occurrences in the reference missing from the hypothesis, occurrences)."""
    hyp = re.findall(r"[\w']+", hypothesis.lower())
    missed = total = 0
    for word in re.findall(r"[\w']+", reference):
        if word in VOCABULARY:
            total += 1
            if word.lower() in hyp:
                hyp.remove(word.lower())
            else:
                missed += 1
    return missed, total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", default="data/real-dev/manifest.tsv", help="real-speech development set")
    ap.add_argument("--backbone", default="whisper-tiny", choices=["whisper-tiny", "whisper-base"])
    args = ap.parse_args()

    import torch

    from asr_core.audio import load_audio
    from asr_core.corpus.synth import render
    from asr_core.manifest import read_manifest
    from asr_core.metrics import wer
    from asr_core.engines import load_engine

    # The product's final pass: asr_core's defaults (beam 5, float32, the full 30 s window).
    checkpoint = ROOT / "var" / "models" / f"{args.backbone}.pt"
    rec = load_engine(args.backbone, path=str(checkpoint))
    prompt = ", ".join(VOCABULARY)
    products = [(torch.from_numpy(render(v, text, 1000 * i + j)), text)
                for i, v in enumerate(_voices()) for j, text in enumerate(SENTENCES)]  # fmt: skip
    control = [(load_audio(u.audio, 8000), u.text) for u in read_manifest(args.manifest, ("test",))]
    print(f"{args.backbone}: {len(products)} product utterances, {len(control)} real control prompts; "
          f"vocabulary: {prompt}", flush=True)  # fmt: skip

    rows = []
    for name, utterances in (("products", products), ("control (real speech)", control)):
        for with_list in (False, True):
            started = time.perf_counter()
            pairs, missed, total = [], 0, 0
            for audio, text in utterances:
                hyp = rec.transcribe(audio, 8000, prompt=prompt if with_list else None).text
                pairs.append((text, hyp))
                m, t = listed_word_errors(text, hyp)
                missed, total = missed + m, total + t
            seconds = (time.perf_counter() - started) / len(utterances)
            rows.append((name, "with" if with_list else "without", f"{100 * wer(pairs):.2f}",
                         f"{100 * missed / total:.1f} ({missed}/{total})" if total else "-", f"{seconds:.2f}"))
            print(rows[-1], flush=True)
            if name == "products" and with_list:
                for text, hyp in pairs[:12]:
                    print(f"   {text!r} -> {hyp!r}")
    print()
    header = ("set", "list", "WER %", "listed-word error %", "s/utterance")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
