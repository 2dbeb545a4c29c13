#!/usr/bin/env bash
# `make bench`: the benchmarks one after another (never in parallel: they time the CPU).
set -euo pipefail
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/harness.sh"
python benchmarks/bench_engine.py "$@"
python benchmarks/bench_node.py
python benchmarks/bench_lifecycle.py
python benchmarks/bench_train.py
