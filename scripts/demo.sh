#!/usr/bin/env bash
# The README's "run it" command: a local devnet with the real LayerZero V2 contracts, three
# dvn nodes (aws, aliyun, gcp; embedded SQLite each) and messages verified both ways.
# Extra arguments go to the demo (e.g. --messages 25, --keep-running).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh devnet
cargo build --locked --release --quiet -p dvn -p dvn-devnet
exec target/release/dvn-devnet demo --dvn-bin target/release/dvn "$@"
