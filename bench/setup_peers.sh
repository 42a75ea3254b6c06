#!/usr/bin/env bash
# Creates var/bench-venv with the peer recognizers (pocketsphinx, faster-whisper + Whisper tiny weights).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x var/bench-venv/bin/python ] || python3 -m venv var/bench-venv
var/bench-venv/bin/pip install -q -r bench/requirements-peers.txt
