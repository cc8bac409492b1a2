#!/usr/bin/env bash
# Set up a fresh machine for wavllm-eval: system packages, a virtual environment in .venv with the
# pinned CPU torch first (an unpinned torch can pull a multi-GB CUDA build), then the project.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
if [ "${WAVLLM_EVAL_HTML_TESTS:-1}" = 1 ] && [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing system packages: ${missing[*]}" >&2
  # Another apt/dpkg (unattended upgrades on a fresh machine) may hold the locks: wait, do not fail.
  for attempt in $(seq 1 60); do
    if $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq; then break; fi
    echo "apt-get update failed (another package manager running?); retrying in 10 s ($attempt/60)" >&2
    sleep 10
  done
  DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off)
echo "installing torch 2.13.0 (CPU) into .venv ..." >&2
"${pip[@]}" "torch==2.13.0" 2>&1 | grep -E "^(Collecting|Installing|Successfully|ERROR)" >&2 || true
extra=""; [ "${1:-}" = "--test" ] && extra="[test]"
echo "installing wavllm-eval${extra} and its dependencies into .venv (a few minutes on a fresh machine) ..." >&2
"${pip[@]}" -e ".${extra}" 2>&1 | grep -E "^(Collecting|Installing|Successfully|ERROR)" >&2 || true
.venv/bin/python -c "import torch, wavllm_eval; assert torch.__version__.startswith('2.'), torch.__version__"
