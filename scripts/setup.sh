#!/usr/bin/env bash
# Installs everything the tests and the demo need on a fresh machine of this project's kind.
# Idempotent, and quiet when all is present.
#   scripts/setup.sh          everything the tests need
#   scripts/setup.sh devnet   only the pinned npm packages (anvil + LayerZero artifacts)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-all}"
say() { printf 'setup: %s\n' "$*"; }

# --- pinned npm packages: anvil 1.7.1 and the LayerZero V2 contracts 3.0.168 -----------------
install_devnet_packages() {
  local dir="$root/devnet" stamp="$root/devnet/node_modules/.dvn-lock.sha256"
  local want; want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$dir/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil" ]]; then
    return
  fi
  command -v npm >/dev/null || { say "npm is required (Node.js 20)"; exit 1; }
  say "installing pinned npm packages into devnet/node_modules"
  (cd "$dir" && npm ci --no-progress --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
}

# --- pinned npm packages checking the Grafana dashboard against Grafana's published types ------
install_dashboard_check() {
  local dir="$root/deploy/grafana/schema-check" stamp="$root/deploy/grafana/schema-check/node_modules/.dvn-lock.sha256"
  local want; want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return
  fi
  say "installing pinned npm packages into deploy/grafana/schema-check/node_modules"
  (cd "$dir" && npm ci --no-progress --loglevel=error >/dev/null)
  echo "$want" > "$stamp"
}

# --- Debian packages the test suites use -------------------------------------------------------
# softhsm2 + opensc: a real PKCS#11 token for the HSM signer tests.
# prometheus: promtool, to check alert rules and the metrics exposition.
# redis-server / postgresql: normally already running on this machine kind; the test suites
# also start private instances of them.
install_debs() {
  local missing=()
  command -v softhsm2-util >/dev/null || missing+=(softhsm2)
  command -v pkcs11-tool >/dev/null || missing+=(opensc)
  command -v promtool >/dev/null || missing+=(prometheus)
  # The operations stack run for real: a Prometheus scraping live nodes sends the project's
  # alerts to an Alertmanager; node_exporter feeds the disk panel and alert.
  command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
  command -v prometheus-node-exporter >/dev/null || missing+=(prometheus-node-exporter)
  command -v prometheus-blackbox-exporter >/dev/null || missing+=(prometheus-blackbox-exporter)
  # chromium: the /status page rendered headless (screenshot, DOM).
  command -v chromium >/dev/null || missing+=(chromium)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
  # faketime: one node with a skewed wall clock (submitter turns must follow block time).
  command -v faketime >/dev/null || missing+=(faketime)
  # systemd: systemd-analyze checks the shipped timers' calendar expressions (nothing is started).
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  # libnss-myhostname: NAME.localhost resolves to loopback, for the Aliyun OSS backup test
  # (OSS wants virtual-host style: http://BUCKET.localhost:PORT in front of moto's S3).
  getent ahosts dvn-probe.localhost >/dev/null 2>&1 || missing+=(libnss-myhostname)
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# --- services: PostgreSQL (127.0.0.1:5432, database `test`) and Redis (127.0.0.1:6379) ---------
start_services() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    say "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  fi
  if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" 2>/dev/null | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -qc "create database test" >/dev/null
  fi
  if ! redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
  fi
}

# --- Python test tools: moto's AWS server (pinned), in a project-local virtualenv -----------------
install_python_tools() {
  local venv="${DVN_TEST_VENV:-$root/.cache/venv}" req="$root/scripts/requirements-test.txt"
  local stamp="$venv/.dvn-requirements.sha256" want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
    return
  fi
  say "installing pinned Python test tools into ${venv#$root/}"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
}

install_devnet_packages
if [[ "$mode" == all ]]; then
  install_dashboard_check
  install_python_tools
  install_debs
  start_services
fi
