"""Synthetic callers: a voice x prosody x perturbation x telephone channel.

A speaker is fixed for all its utterances, so speakers differ the way callers
do (voice, speaking rate, pitch, vocal tract, line quality). Everything here is
plain data; `synth.py` turns a speaker and a sentence into 8 kHz audio.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass

ESPEAK_VOICES = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp",
                 "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# human-sounding espeak-ng variants (robots, whispers and effects left out)
ESPEAK_VARIANTS = ("", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
                   "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "adam", "Alex",
                   "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin",
                   "boris", "caleb", "david", "Denis", "Diogo", "ed", "edward", "edward2", "Gene",
                   "Gene2", "gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4",
                   "Jacky", "john", "Lee", "linda", "marcelo", "Marco", "Mario", "max", "Michael",
                   "michel", "miguel", "Mike", "Nguyen", "pablo", "paul", "pedro", "quincy", "rob",
                   "robert", "steph", "steph2", "steph3", "zac", "anika", "AnxiousAndy", "grandpa",
                   "grandma", "norbert", "sandro", "shelby", "travis", "victor")
# variants that only appear in dev/test speakers: voices held out from training
HELD_OUT_VARIANTS = frozenset({"f4", "m6", "klatt4", "Annie", "edward2", "iven3", "marcelo",
                               "steph3", "travis", "Mike", "Gene2", "aunty"})
# Accented callers: espeak-ng voices of other languages reading English text (their letter-to-sound
# rules and prosody give a foreign accent). Test speakers' languages never occur in training.
ACCENT_LANGUAGES = ("de", "es", "it", "pt", "ru", "cs", "ro", "hu", "tr", "id", "fi", "da", "sk", "bg")
HELD_OUT_ACCENT_LANGUAGES = ("fr-fr", "nl", "pl", "sv", "hi", "hr")
ACCENT_VARIANTS = ("", "m1", "m2", "m3", "f1", "f2", "f3", "klatt")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
CODECS = ("ulaw", "gsm", "amr", "none")


@dataclass(frozen=True)
class Speaker:
    id: str
    split: str            # train / dev / test (adapt utterances belong to test speakers)
    engine: str           # espeak / flite / festival
    voice: str            # engine voice, espeak "voice+variant"
    rate: float           # espeak words per minute; flite/festival: duration stretch
    pitch: int            # espeak pitch 0..99 (others: 50)
    formant: float        # vocal-tract scaling (1.0 = none), applied with sox
    pitch_cents: int      # extra pitch shift applied with sox
    codec: str            # ulaw / gsm / amr / none
    amr_mode: int         # AMR-NB bitrate mode 0..7
    snr_db: float         # line noise level
    gain_db: float        # line level
    band_low: int         # channel band-pass edges (Hz)
    band_high: int

    def as_dict(self) -> dict:
        return asdict(self)


def _channel(rng: random.Random, hard: bool) -> dict:
    return dict(
        codec=rng.choice(CODECS[:3]) if hard else rng.choice(CODECS),
        amr_mode=rng.randint(0, 7),
        snr_db=round(rng.uniform(8, 20) if hard else rng.uniform(12, 40), 1),
        gain_db=round(rng.uniform(-12, 3), 1),
        band_low=rng.choice([200, 250, 300, 350]),
        band_high=rng.choice([3000, 3200, 3400, 3600]),
    )


def make_speaker(rng: random.Random, sid: str, split: str) -> Speaker:
    """One random caller. Dev/test speakers use held-out espeak variants and harder lines."""
    held_out = split != "train"
    r = rng.random()
    if r < 0.72:
        engine = "espeak"
        pool = [v for v in ESPEAK_VARIANTS if (v in HELD_OUT_VARIANTS) == held_out]
        variant = rng.choice(pool)
        base = rng.choice(ESPEAK_VOICES)
        voice = base + (f"+{variant}" if variant else "")
        rate, pitch = float(rng.randint(130, 200)), rng.randint(25, 75)
    elif r < 0.92:
        engine, voice = "flite", rng.choice(FLITE_VOICES)
        rate, pitch = round(rng.uniform(0.85, 1.2), 2), 50
    else:
        engine, voice = "festival", rng.choice(FESTIVAL_VOICES)
        rate, pitch = round(rng.uniform(0.85, 1.2), 2), 50
    return Speaker(
        id=sid, split=split, engine=engine, voice=voice, rate=rate, pitch=pitch,
        formant=round(rng.uniform(0.88, 1.14), 3), pitch_cents=rng.randint(-300, 300),
        **_channel(rng, hard=held_out and rng.random() < 0.5),
    )


def make_accented_speaker(rng: random.Random, sid: str, split: str) -> Speaker:
    """A caller with a foreign accent (another language's espeak-ng voice) on a random line;
    dev/test speakers use held-out languages and harder lines."""
    held_out = split != "train"
    lang = rng.choice(HELD_OUT_ACCENT_LANGUAGES if held_out else ACCENT_LANGUAGES)
    variant = rng.choice(ACCENT_VARIANTS)
    return Speaker(
        id=sid, split=split, engine="espeak", voice=lang + (f"+{variant}" if variant else ""),
        rate=float(rng.randint(130, 185)), pitch=rng.randint(25, 75),
        formant=round(rng.uniform(0.9, 1.1), 3), pitch_cents=rng.randint(-250, 250),
        **_channel(rng, hard=held_out and rng.random() < 0.5),
    )
