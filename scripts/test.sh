#!/usr/bin/env bash
# `make test`: lint + the whole pytest suite, DDS on loopback.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
set +u
# shellcheck disable=SC1091
source env.sh
set -u
# shellcheck disable=SC1091
source scripts/loopback_dds.sh
echo "[test] ruff check"
ruff check .
echo "[test] pytest (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery on localhost)"
python -m pytest test "$@"
