#!/usr/bin/env bash
# OpenID Connect flows under load (docs/BENCHMARKS.md, "OpenID Connect flows under load"):
# complete authorization-code flows against the IdP (card login over a new mutual-TLS
# connection each flow, pre-approved client, token exchange with client_secret_basic,
# ID token checked) at concurrency 1, 8, 32 and 64 with ES256 and RS256; the token
# endpoint alone (refresh_token grants); the same against node `oidc-provider` without
# mTLS in the same run, with the ratios; and a 100,000-flow run on a fresh IdP with its
# resident memory after it. Prints the machine and a table.
#
# Usage: scripts/bench-oidc.sh
# Environment:
#   DURATION=10        measured seconds per cell (plus WARMUP=2 s of unmeasured load)
#   CONCURRENCY="1 8 32 64"
#   REFRESH_CONCURRENCY="1 8 32 64"   token-endpoint-only cells
#   KEEPALIVE_CONCURRENCY="32"   IdP flows whose card connection is kept alive between
#                      flows (no handshake per flow), to show what the handshake costs
#   MEMORY_FLOWS=100000  flows of the memory run (0: skip it); MEMORY_CONCURRENCY=32
#   MEMORY_REDIS=1     repeat the memory run with the ephemeral store in a local
#                      redis-server (sessions and tokens outside the IdP process)
#   OIDC_PROVIDER_VERSION  install this oidc-provider version instead of the locked one
#                          (e.g. "latest"); default: `npm ci` of the committed lock file
#   NODE=node          the node binary that runs oidc-provider
#   RESULTS=<dir>      where the per-cell JSON results go (default: a temporary folder)
#
# Everything runs on this machine: both servers listen on 127.0.0.1 and share the CPUs
# with the load generator (bench/load, its own cargo workspace, built into
# bench/load/target). The IdP runs with SQLite and the in-process ephemeral store.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-1 8 32 64}"
REFRESH_CONCURRENCY="${REFRESH_CONCURRENCY:-1 8 32 64}"
KEEPALIVE_CONCURRENCY="${KEEPALIVE_CONCURRENCY:-32}"
MEMORY_FLOWS="${MEMORY_FLOWS:-100000}"
MEMORY_CONCURRENCY="${MEMORY_CONCURRENCY:-32}"
MEMORY_REDIS="${MEMORY_REDIS:-0}"
NODE="${NODE:-node}"
SECRET="bench-client-secret-$(date +%s)-$$"

command -v "$NODE" >/dev/null || { echo "node is required" >&2; exit 2; }
command -v npm >/dev/null || { echo "npm is required" >&2; exit 2; }

bench_machine "node: $("$NODE" --version)"

echo "## build"
scripts/deps.sh build
cargo build --release --locked -p idp-server --bin idp
IDP="$ROOT/target/release/idp"
(cd bench/load && cargo build --release --locked)
LOAD="$ROOT/bench/load/target/release/oidc-load"
if [ -n "${OIDC_PROVIDER_VERSION:-}" ]; then
  npm install --prefix bench/oidc-provider --no-save --no-audit --no-fund \
    "oidc-provider@$OIDC_PROVIDER_VERSION" >/dev/null
else
  npm ci --prefix bench/oidc-provider --no-audit --no-fund >/dev/null
fi
OP_VERSION="$("$NODE" -p "require('./bench/oidc-provider/node_modules/oidc-provider/package.json').version")"
echo "oidc-provider $OP_VERSION"
echo

bench_workdir
RESULTS="${RESULTS:-$WORK/results}"
mkdir -p "$RESULTS"

# ----- the test PKI (server certificate for both servers, the doctor's card) ----------
bench_dev_pki
SECRET_SHA256="$(printf '%s' "$SECRET" | sha256sum | cut -d' ' -f1)"

# Writes an idp.toml in $1 (ports $2 and $3) with the two benchmark clients and imports
# the test doctors.
idp_config() {
  local dir=$1 public=$2 login=$3 ephemeral=${4:-memory}
  local client=""
  for alg in ES256 RS256; do
    client+="
[[oidc.clients]]
client_id = \"bench-${alg,,}\"
name = \"Bench RP ($alg)\"
secret_sha256 = \"$SECRET_SHA256\"
auth_method = \"client_secret_basic\"
redirect_uris = [\"https://rp.example/cb\"]
scopes = [\"openid\", \"profile\", \"hpki\", \"offline_access\"]
pre_approved = true
refresh_tokens = true
id_token_signed_response_alg = \"$alg\"
"
  done
  bench_idp_config "$dir" "$public" "$login" "$ephemeral" "$client"
}

start_idp() { bench_start_idp "$@"; }

# One cell: run <label> <mode> <issuer> <server pid> <alg> <concurrency> [extra args]
cell() {
  local label=$1 mode=$2 issuer=$3 pid=$4 alg=$5 conc=$6
  shift 6
  local out
  out="$RESULTS/$(echo "$label" | tr ' /=' '___').json"
  "$LOAD" run --mode "$mode" --issuer "$issuer" --ca "$CA" \
    --card-chain "$CARD_CHAIN" --card-key "$CARD_KEY" \
    --client-id "bench-${alg,,}" --client-secret "$SECRET" --alg "$alg" \
    --concurrency "$conc" --server-pid "$pid" --label "$label" --json "$out" "$@"
}

# ----- the IdP ----------------------------------------------------------------------
PUB=$(free_port); LOGIN=$(free_port)
idp_config "$WORK/idp" "$PUB" "$LOGIN"
start_idp "$WORK/idp" "$PUB" "$LOGIN"
echo "## IdP (pid $IDP_PID): https://localhost:$PUB, login origin https://localhost:$LOGIN"
echo "RSS after start: $(rss_kb "$IDP_PID") kB"
for alg in ES256 RS256; do
  for c in $CONCURRENCY; do
    cell "matrix idp flow $alg c=$c" flow "https://localhost:$PUB" "$IDP_PID" "$alg" "$c" \
      --duration-secs "$DURATION" --warmup-secs "$WARMUP"
  done
  for c in $KEEPALIVE_CONCURRENCY; do
    cell "matrix idp flow, card connection kept alive, $alg c=$c" flow "https://localhost:$PUB" \
      "$IDP_PID" "$alg" "$c" --duration-secs "$DURATION" --warmup-secs "$WARMUP" --card-keepalive
  done
  for c in $REFRESH_CONCURRENCY; do
    cell "matrix idp refresh $alg c=$c" refresh "https://localhost:$PUB" "$IDP_PID" "$alg" "$c" \
      --duration-secs "$DURATION" --warmup-secs "$WARMUP"
  done
done
echo "IdP RSS after the matrix: $(rss_kb "$IDP_PID") kB (peak $(hwm_kb "$IDP_PID") kB)"
stop "$IDP_PID"

# ----- node oidc-provider, the same code flow without mTLS ---------------------------
OP_PORT=$(free_port)
PORT="$OP_PORT" TLS_CERT="$PKI/server/server.pem" TLS_KEY="$PKI/server/server.key" \
  CLIENT_SECRET="$SECRET" NODE_ENV=production \
  "$NODE" bench/oidc-provider/server.mjs >"$WORK/oidc-provider.log" 2>&1 &
OP_PID=$!
PIDS+=("$OP_PID")
wait_port "$OP_PORT" "$OP_PID" "$WORK/oidc-provider.log"
echo
echo "## oidc-provider $OP_VERSION (pid $OP_PID): https://localhost:$OP_PORT"
echo "RSS after start: $(rss_kb "$OP_PID") kB"
for alg in ES256 RS256; do
  for c in $CONCURRENCY; do
    cell "matrix oidc-provider flow $alg c=$c" oidc-provider-flow "https://localhost:$OP_PORT" \
      "$OP_PID" "$alg" "$c" --duration-secs "$DURATION" --warmup-secs "$WARMUP"
  done
  for c in $REFRESH_CONCURRENCY; do
    cell "matrix oidc-provider refresh $alg c=$c" oidc-provider-refresh \
      "https://localhost:$OP_PORT" "$OP_PID" "$alg" "$c" \
      --duration-secs "$DURATION" --warmup-secs "$WARMUP"
  done
done
echo "oidc-provider RSS after the matrix: $(rss_kb "$OP_PID") kB (peak $(hwm_kb "$OP_PID") kB)"
stop "$OP_PID"

# ----- memory: a fresh IdP, MEMORY_FLOWS flows, RSS along the way and after them ------
# memory_run <name> <ephemeral store URL>
MEMORY_LINES=()
memory_run() {
  local name=$1 ephemeral=$2
  PUB=$(free_port); LOGIN=$(free_port)
  idp_config "$WORK/idp-$name" "$PUB" "$LOGIN" "$ephemeral"
  start_idp "$WORK/idp-$name" "$PUB" "$LOGIN"
  local chunk=$((MEMORY_FLOWS / 4)) n=0 line
  echo
  echo "## memory ($name): $MEMORY_FLOWS flows at concurrency $MEMORY_CONCURRENCY on a fresh IdP (pid $IDP_PID), ephemeral = $ephemeral"
  line="IdP resident memory, ephemeral store $name: $(rss_kb "$IDP_PID") kB after start"
  for i in 1 2 3 4; do
    cell "memory $name idp flow ES256 c=$MEMORY_CONCURRENCY, flows $((n + 1))-$((n + chunk))" flow \
      "https://localhost:$PUB" "$IDP_PID" ES256 "$MEMORY_CONCURRENCY" --flows "$chunk"
    n=$((n + chunk))
    line+="; $(rss_kb "$IDP_PID") kB after $n flows"
  done
  line+=" (peak $(hwm_kb "$IDP_PID") kB)"
  sleep 5
  line+="; $(rss_kb "$IDP_PID") kB 5 s later"
  echo "$line"
  MEMORY_LINES+=("$line")
  stop "$IDP_PID"
}
if [ "$MEMORY_FLOWS" -gt 0 ]; then
  memory_run memory memory
  if [ "$MEMORY_REDIS" = 1 ]; then
    command -v redis-server >/dev/null || scripts/deps.sh redis-server
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
      >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$REDIS_PORT" "$REDIS_PID" "$WORK/redis.log"
    memory_run redis "redis://127.0.0.1:$REDIS_PORT"
    echo "redis-server RSS after it: $(rss_kb "$REDIS_PID") kB"
    stop "$REDIS_PID"
  fi
fi

echo
echo "## results (oidc-provider $OP_VERSION on node $("$NODE" --version); load average at end: $(cut -d' ' -f1-3 /proc/loadavg))"
echo
"$LOAD" table "$RESULTS"
if [ ${#MEMORY_LINES[@]} -gt 0 ]; then
  echo
  printf '%s\n' "${MEMORY_LINES[@]}"
fi
