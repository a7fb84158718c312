#!/usr/bin/env bash
# Installs everything rbqe_tf needs on a fresh Debian/Ubuntu machine:
# Debian's ffmpeg (with libx265, for HEVC data) and the package with its test extras.
set -euo pipefail
cd "$(dirname "$0")"
if ! ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libx265; then
  echo "setup: installing ffmpeg (libx265) with apt-get" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ffmpeg >/dev/null
fi
python -m pip install -q --disable-pip-version-check -e ".[test]"
