#!/usr/bin/env bash
# The README's "run it" command: a local devnet with the real LayerZero V2 contracts and
# messages verified both ways through the 2-of-3 DVN. Extra arguments go to the demo
# (e.g. --messages 25, --keep-running).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh devnet
cargo run --locked --release --quiet -p dvn-devnet --bin dvn-devnet -- demo "$@"
