#!/usr/bin/env bash
# The container image and the compose stack, built and run with podman — the separate command
# (a cold release build inside the image takes ~15 minutes on a 2-core machine, too long for
# scripts/test.sh's CI budget). On a fresh machine of this kind it:
#   1. installs podman (with runc) and mmdebstrap from Debian, podman-compose 1.3.0 from PyPI;
#   2. makes the base images locally (no image registry is reachable): Debian bookworm-slim,
#      a build image with a C toolchain — Rust comes from the host's toolchain, mounted into
#      the build read-only — and Debian-packaged Redis and PostgreSQL;
#   3. builds the repository's Dockerfile unchanged (`podman build --format docker
#      --pull=never`, the host's CA bundle and crate cache mounted for the crate downloads);
#   4. runs the `container` integration test: docker-compose.yml's stack (dvn, redis, postgres)
#      started with podman-compose as one region of the devnet, checked the way the operator
#      manual checks it, verifying messages through the containerised node.
# Usage: scripts/container-test.sh [--rebuild]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { echo "container-test: $*" >&2; }

rebuild=false
if [ "${1:-}" = "--rebuild" ]; then
    rebuild=true
    shift
fi

scripts/setup.sh

need=()
for pkg in podman runc slirp4netns uidmap fuse-overlayfs mmdebstrap; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# podman-compose from PyPI, pinned: Debian's 1.0.3 appends an override's `command` to the base
# one and puts every service on the project network even with `network_mode: host`.
.cache/venv/bin/pip install --quiet "podman-compose==1.3.0"
# runc, not crun (hybrid cgroups here); ulimits the sandbox allows.
if ! grep -q 'runtime = "runc"' /etc/containers/containers.conf 2>/dev/null; then
    mkdir -p /etc/containers
    cat >>/etc/containers/containers.conf <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
EOF
fi

mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
mirror="${mirror:-http://deb.debian.org/debian}"
base_image() { # name packages [import --change …]
    local name="$1" include="$2"
    shift 2
    if podman image exists "$name" && ! $rebuild; then
        return
    fi
    log "making $name from Debian bookworm ($include)"
    local tar
    tar="$(mktemp --suffix=.tar)"
    mmdebstrap --quiet --variant=minbase --include="$include" bookworm "$tar" "$mirror"
    podman import "$@" "$tar" "$name" >/dev/null
    rm -f "$tar"
}
base_image localhost/debian:bookworm-slim ca-certificates
# The Dockerfile's build stage (`FROM rust:1.95-bookworm`): a C toolchain for the -sys crates;
# rustc and cargo are the host's, mounted at /usr/local/rust by the build below.
base_image localhost/rust:1.95-bookworm ca-certificates,gcc,libc6-dev,pkg-config,make \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo'
base_image localhost/dvn-test-redis:bookworm redis-server \
    --change 'WORKDIR /data' --change 'CMD ["redis-server"]'
base_image localhost/dvn-test-postgres:bookworm postgresql-15,postgresql-client-15

if ! podman image exists dvn-node:latest || $rebuild; then
    log "building the Dockerfile (a cold release build: ~15 minutes on 2 cores)"
    mkdir -p "$HOME/.cargo/registry"
    started=$(date +%s)
    podman build --pull=never --format docker -t dvn-node:latest \
        -v "$(rustc --print sysroot)":/usr/local/rust:ro \
        -v "$HOME/.cargo/registry":/usr/local/cargo/registry \
        -v /etc/ssl/certs:/etc/ssl/certs:ro \
        .
    log "image built in $(($(date +%s) - started)) s"
fi

log "running the compose stack test"
cargo nextest run --locked --profile ci --run-ignored only -E 'test(/^container::/)' "$@"
