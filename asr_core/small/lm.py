"""Lexicon and n-gram language model of customer-service English (`python -m asr_core build-lm`).

The lexicon is large so callers' unforeseen words still decode: every word of
Debian's `wamerican` list (lower-case, letters and apostrophes) plus the
generator's words, spelled as characters (pronunciation-free CTC). The LM is a
backoff trigram in ARPA format with absolute discounting, trained on text from
the sentence generator (a seed disjoint from the audio corpus) plus a set of
free-form conversational sentences, with a unigram floor over the whole
lexicon.
"""
from __future__ import annotations

import math
import os
import random
import re
from collections import Counter, defaultdict

from asr_core.corpus.sentences import sentence
from asr_core.text import normalize

WORDLIST = "/usr/share/dict/american-english"
DISCOUNT = 0.7
FLOOR_COUNT = 0.02          # pseudo-count of each lexicon word never seen in the LM text

# Phrasing the generator's templates do not produce, so the LM is not template-bound.
EXTRA_TEXT = """
i have a question about my bill
can you tell me why my payment didn't go through
my service keeps dropping in the evening
i've been waiting on hold for almost an hour
could you please check the status of my order
i don't understand these fees
the app keeps crashing when i try to log in
i want to know what my options are
is it possible to get a credit for the outage
someone called me saying they were from your company
i think my account was hacked
i need a copy of my last statement
what time do you close today
can i pay with a different card
please cancel the automatic payment
i'm calling on behalf of my mother
she is the account holder
how long will the repair take
the technician never showed up
i would like to add a line to my plan
can you remove the late fee this time
i already paid that invoice last week
my package says delivered but it isn't here
i need to update my phone number
how do i change my email address
the website won't let me reset my password
i never signed up for this service
can you explain the charges on page two
what is the cheapest plan you have
do you have any promotions right now
i'm moving to another state next month
can i transfer my service to my new home
the signal is really weak in my house
the screen is cracked and it won't turn on
i would like a refund please
that's not what i was told last time
can i get that in writing
thank you so much for your help
you've been very helpful
have a nice day
goodbye
""".strip().splitlines()


def lexicon_words(extra: set[str]) -> list[str]:
    words = set(extra)
    if os.path.isfile(WORDLIST):
        with open(WORDLIST, encoding="utf-8", errors="ignore") as f:
            for line in f:
                w = line.strip()
                if w and w == w.lower() and re.fullmatch(r"[a-z]+('[a-z]+)?", w) and not w.endswith("'s"):
                    words.add(w)
    return sorted(w for w in words if re.fullmatch(r"[a-z']+", w))


def training_text(n_sentences: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    sents = [sentence(rng).split() for _ in range(n_sentences)]
    sents += [normalize(s).split() for s in EXTRA_TEXT] * 20
    return [s for s in sents if s]


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def build_arpa(sents: list[list[str]], lexicon: list[str], path: str) -> None:
    """Write a backoff trigram ARPA file (absolute discounting) with a unigram floor over `lexicon`."""
    uni: Counter = Counter()
    big: dict[tuple[str, ...], Counter] = defaultdict(Counter)
    tri: dict[tuple[str, ...], Counter] = defaultdict(Counter)
    for s in sents:
        toks = ["<s>"] + s + ["</s>"]
        for i in range(1, len(toks)):
            uni[toks[i]] += 1
            big[(toks[i - 1],)][toks[i]] += 1
            if i >= 2:
                tri[(toks[i - 2], toks[i - 1])][toks[i]] += 1
    vocab = sorted(set(lexicon) | set(uni) | {"</s>"} - {"<s>"})
    total = sum(uni.values()) + FLOOR_COUNT * len(vocab)
    p1 = {w: (uni.get(w, 0) + FLOOR_COUNT) / total for w in vocab}
    p_unk = FLOOR_COUNT / total

    def probs(table: dict[tuple[str, ...], Counter], lower) -> tuple[dict, dict]:
        p, bo = {}, {}
        for h, nxt in table.items():
            c = sum(nxt.values())
            seen = {w: (n - DISCOUNT) / c for w, n in nxt.items() if n > DISCOUNT}
            left = 1.0 - sum(seen.values())
            lower_seen = sum(lower(h, w) for w in seen)
            bo[h] = left / max(1e-12, 1.0 - lower_seen)
            for w, q in seen.items():
                p[h + (w,)] = q
        return p, bo

    p2, bo1 = probs(big, lambda h, w: p1.get(w, p_unk))

    def bigram(v: str, w: str) -> float:
        return p2.get((v, w)) or bo1.get((v,), 1.0) * p1.get(w, p_unk)

    p3, bo2 = probs(tri, lambda h, w: bigram(h[1], w))
    lg = lambda x: math.log10(max(x, 1e-99))  # noqa: E731
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".part", "w", encoding="utf-8") as f:
        f.write(f"\\data\\\nngram 1={len(vocab) + 2}\nngram 2={len(p2)}\nngram 3={len(p3)}\n\n\\1-grams:\n")
        f.write(f"-99\t<s>\t{_fmt(lg(bo1.get(('<s>',), 1.0)))}\n")
        f.write(f"{_fmt(lg(p_unk))}\t<unk>\n")
        for w in vocab:
            b = bo1.get((w,))
            f.write(f"{_fmt(lg(p1[w]))}\t{w}" + (f"\t{_fmt(lg(b))}" if b is not None else "") + "\n")
        f.write("\n\\2-grams:\n")
        for (v, w), q in sorted(p2.items()):
            b = bo2.get((v, w))
            f.write(f"{_fmt(lg(q))}\t{v} {w}" + (f"\t{_fmt(lg(b))}" if b is not None else "") + "\n")
        f.write("\n\\3-grams:\n")
        for (u, v, w), q in sorted(p3.items()):
            f.write(f"{_fmt(lg(q))}\t{u} {v} {w}\n")
        f.write("\n\\end\\\n")
    os.replace(path + ".part", path)


def write_lexicon(words: list[str], path: str) -> None:
    with open(path + ".part", "w", encoding="utf-8") as f:
        for w in words:
            f.write(f"{w}\t{' '.join(w)} |\n")
    os.replace(path + ".part", path)


def build_lm(out_dir: str, n_sentences: int = 60000, seed: int = 99) -> tuple[str, str]:
    """Write `lexicon.txt` and `lm.arpa` into out_dir; returns their paths."""
    sents = training_text(n_sentences, seed)
    words = lexicon_words({w for s in sents for w in s})
    lex, arpa = os.path.join(out_dir, "lexicon.txt"), os.path.join(out_dir, "lm.arpa")
    os.makedirs(out_dir, exist_ok=True)
    write_lexicon(words, lex)
    build_arpa(sents, words, arpa)
    return lex, arpa
