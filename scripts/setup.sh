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
# --no-compile, then one parallel compileall: pip byte-compiles every file on one core (~70 s of a
# fresh install here); compileall -j 0 does the same work on every core, and only after an install
pip=(.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off --no-compile)
log=$(mktemp); trap 'rm -f "$log"' EXIT
echo "installing torch 2.13.0 (CPU) into .venv ..." >&2
"${pip[@]}" "torch==2.13.0" 2>&1 | tee -a "$log" | grep -E "^(Collecting|Installing|Successfully|ERROR)" >&2 || true
extra=""; [ "${1:-}" = "--test" ] && extra="[test]"
echo "installing wavllm-eval${extra} and its dependencies into .venv (a few minutes on a fresh machine) ..." >&2
"${pip[@]}" -e ".${extra}" 2>&1 | tee -a "$log" | grep -E "^(Collecting|Installing|Successfully|ERROR)" >&2 || true
# (pip reinstalls the editable project itself every time: that alone needs no compile)
if grep "^Successfully installed" "$log" | grep -qv "^Successfully installed wavllm[-_]eval-[^ ]*$"; then
  echo "byte-compiling the installed packages ..." >&2
  # a few packages ship files that are not Python 3 (templates, tests): compileall's status says so, not us
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    >/dev/null 2>&1 || true
fi
.venv/bin/python -c "import torch, wavllm_eval; assert torch.__version__.startswith('2.'), torch.__version__"
