#!/usr/bin/env bash
# `make demo`: offline end-to-end demo (see scripts/demo.py). DDS stays on loopback.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
set +u
# shellcheck disable=SC1091
source env.sh
set -u
# shellcheck disable=SC1091
source scripts/loopback_dds.sh
python scripts/demo.py "$@"
