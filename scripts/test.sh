#!/usr/bin/env bash
# `make test`: lint + the whole pytest suite, DDS on loopback.
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"
echo "[test] ruff check"
ruff check .
echo "[test] pytest (ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery on localhost)"
# arguments replace the default target: scripts/test.sh test/test_x.py -q
[ $# -gt 0 ] || set -- test
python -m pytest "$@"
