# Sourced by scripts/test.sh, demo.sh and bench.sh: repository root, environment (env.sh) and
# DDS on loopback with a per-run domain (loopback_dds.sh).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
set +u
# shellcheck disable=SC1091
source env.sh
set -u
# shellcheck disable=SC1091
source scripts/loopback_dds.sh
