#!/usr/bin/env bash
# Settle's main job on the embedded default: a local node with embedded RocksDB under ./data,
# seeded partners and contracts, demo traffic, and where to connect. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

exec cargo run --locked -q -p settle-node --bin settle -- dev "$@"
