# Shell helpers shared by the load benchmarks (scripts/bench-oidc.sh, scripts/bench-saml.sh).
# Sourced, not run: `source scripts/bench-common.sh` from the repository root after
# `set -euo pipefail`. Expects $IDP (the release `idp` binary) before bench_dev_pki,
# bench_idp_config and bench_start_idp are called.

# Prints the machine section of a benchmark's output; extra lines as arguments.
bench_machine() {
  echo "## machine"
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "nproc: $(nproc)"
  lscpu | head -20
  grep MemTotal /proc/meminfo || true
  rustc --version
  local line
  for line in "$@"; do echo "$line"; done
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
}

# A temporary folder $WORK, removed at exit with every process listed in $PIDS stopped.
bench_workdir() {
  WORK="$(mktemp -d)"
  PIDS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000))
}

wait_port() {
  local port=$1 pid=$2 log=$3
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { echo "server exited:" >&2; tail -20 "$log" >&2; exit 1; }
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "server on port $port did not start" >&2; tail -20 "$log" >&2; exit 1
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The test PKI in $WORK/pki (server certificate, the doctor's card): sets PKI, CA,
# CARD_CHAIN and CARD_KEY.
bench_dev_pki() {
  "$IDP" dev-pki --out "$WORK/pki" --seed bench >/dev/null
  PKI="$WORK/pki"
  CA="$PKI/ca/tls-root.pem"
  CARD_CHAIN="$PKI/cards/doctor/chain.pem"
  CARD_KEY="$PKI/cards/doctor/auth.key"
}

# Writes an idp.toml in $1 (public port $2, login port $3, ephemeral store $4) with the
# test PKI, SQLite (or the database URL $6) and limits raised, then $5 appended after the
# [oidc] table (OIDC clients, a [saml] table, ...), and imports the test doctors.
bench_idp_config() {
  local dir=$1 public=$2 login=$3 ephemeral=${4:-memory} extra=${5:-}
  local database=${6:-sqlite://$1/idp.db}
  mkdir -p "$dir"
  cat >"$dir/idp.toml" <<EOF
issuer = "https://localhost:$public"

[public]
listen = "127.0.0.1:$public"
url = "https://localhost:$public"
cert = "$PKI/server/server.pem"
key = "$PKI/server/server.key"

[login]
listen = "127.0.0.1:$login"
url = "https://localhost:$login"

[hpki]
anchors = ["$PKI/ca/root.pem"]
intermediates = ["$PKI/ca/jma-ca.pem"]
accepted_policies = ["2.999.392.1.1"]
unknown_holder = "refuse"

[hpki.revocation]
crl_files = ["$PKI/crl/root.crl", "$PKI/crl/jma-ca.crl"]
reload_secs = 60

[storage]
database = "$database"
ephemeral = "$ephemeral"

# The benchmark makes no failed logins; limits raised so that it is never throttled.
[rate_limit]
failures_per_address = 1000000
failures_per_certificate = 1000000
window_secs = 60

[oidc]
pairwise_salt = "bench-pairwise-salt-0123456789"
$extra
EOF
  "$IDP" doctors import --config "$dir/idp.toml" "$PKI/doctors.csv" >"$dir/import.log" 2>&1 \
    || { cat "$dir/import.log" >&2; exit 1; }
}

# Starts an IdP from $1/idp.toml (ports $2 and $3); sets IDP_PID.
bench_start_idp() {
  local dir=$1 public=$2 login=$3
  IDP_LOG=info "$IDP" serve --config "$dir/idp.toml" >/dev/null 2>"$dir/idp.log" &
  IDP_PID=$!
  PIDS+=("$IDP_PID")
  wait_port "$public" "$IDP_PID" "$dir/idp.log"
  wait_port "$login" "$IDP_PID" "$dir/idp.log"
}
