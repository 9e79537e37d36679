#!/usr/bin/env bash
# The README's test command: installs what the tests need, then runs every check CI runs.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup.sh
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# A region's build with no cloud KMS SDK (each is a feature, on by default) must still build.
cargo clippy -p dvn --no-default-features --lib --bin dvn --locked -- -D warnings
cargo nextest run --workspace --locked --profile ci "$@"
