#!/usr/bin/env bash
# The main job end to end: set up, build the bundled demo corpus (a real LibriSpeech utterance plus
# espeak-ng speech in the native layout), recognise it with PocketSphinx, score and print the table.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/wavllm-eval demo --output-dir demo-out "$@"
