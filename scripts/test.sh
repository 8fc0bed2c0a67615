#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints (warnings are errors), then every test
# of every crate (unit, property, golden, storage on real RocksDB, node and cluster tests over
# real sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace

# Differential check of the settlement numbers: random scenarios through `settle replay` and
# through an independent Python reading of the spec (tools/refimpl) must agree exactly.
cargo build --locked -q -p settle-node --bin settle
python3 tools/refimpl/diffcheck.py "$CARGO_TARGET_DIR/debug/settle" --cases 300 --seed 1

# The container image and the Helm chart: Dockerfile static checks, helm lint/template, schema
# validation, and the chart's quorum, probe and hook properties (no Kubernetes cluster needed).
bash helm/test.sh
