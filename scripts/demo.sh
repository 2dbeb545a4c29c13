#!/usr/bin/env bash
# `make demo`: offline end-to-end demo (see scripts/demo.py). DDS stays on loopback.
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"
python scripts/demo.py "$@"
