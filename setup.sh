#!/usr/bin/env bash
# Installs everything rbqe_tf needs on a fresh Debian/Ubuntu machine:
# Debian's ffmpeg (with libx265, for HEVC data) and the package with its test extras.
# Installs nothing that is already there; as root it never calls sudo.
set -euo pipefail
cd "$(dirname "$0")"
# The encoder list goes to a variable first: `ffmpeg ... | grep -q` under pipefail fails
# with SIGPIPE (141) when grep stops reading early, which looked like "no libx265".
encoders="$(ffmpeg -hide_banner -encoders 2>/dev/null || true)"
if [[ "$encoders" != *libx265* ]]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: ffmpeg with libx265 not found and no apt-get here; install it yourself" \
         "(needed for HEVC data only)" >&2
  else
    echo "setup: installing ffmpeg (libx265) with apt-get" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
  fi
fi
python -m pip install -q --disable-pip-version-check -e ".[test]"
