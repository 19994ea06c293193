#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with the pinned package set,
# and the system packages the pipeline needs (Tesseract OCR with Korean data, a Hangul font, an
# emoji font, Prometheus, Chromium for the UI's test).
# Re-running it is cheap: it only reinstalls when pyproject.toml or constraints.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "setup: Python 3.11 or newer is required (found $("$PYTHON" --version 2>&1))" >&2
  exit 1
fi

need_system=()
command -v tesseract >/dev/null 2>&1 || need_system+=(tesseract-ocr tesseract-ocr-eng)
if ! (command -v tesseract >/dev/null 2>&1 && tesseract --list-langs 2>/dev/null | grep -qx kor); then
  need_system+=(tesseract-ocr-kor)
fi
if ! (command -v fc-list >/dev/null 2>&1 && fc-list :lang=ko 2>/dev/null | grep -q .); then
  need_system+=(fonts-nanum)
fi
# Emoji in ad copy are drawn from a colour emoji font (the Hangul fonts have none).
if ! (command -v fc-list >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi 'Noto Color Emoji'); then
  need_system+=(fonts-noto-color-emoji)
fi
# Prometheus and promtool: the alert rules' checks and the metrics end-to-end test (the tests start
# their own server; the package's service is kept from starting on install).
if ! (command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1); then
  need_system+=(prometheus)
fi
# Chromium, headless: the test of what the Dagster UI draws and the UI benchmark drive it.
command -v chromium >/dev/null 2>&1 || need_system+=(chromium)
if [ ${#need_system[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing system packages: ${need_system[*]}"
    apt-get update -qq >/dev/null
    no_services=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # no package may start a service of its own here
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && no_services=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_system[@]}" >/dev/null
    [ -n "$no_services" ] && rm -f /usr/sbin/policy-rc.d
  else
    echo "setup: missing system packages: ${need_system[*]}" >&2
    echo "setup: install them (Debian/Ubuntu: sudo apt-get install ${need_system[*]}) and re-run" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.setup-stamp
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages (first run: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi
