#!/usr/bin/env bash
# The cost of the durable audit log under load (docs/BENCHMARKS.md, "Audit log under
# load"): complete OIDC flows (card login over a new mutual-TLS connection, release,
# token exchange: three audit records per flow, each committed before its answer) against
# the IdP as built, and against a `bench-unaudited` build whose audit log keeps nothing,
# on SQLite and on PostgreSQL, at each concurrency; the ratio of the two rates per cell.
#
# Usage: scripts/bench-audit.sh
# Environment:
#   DURATION=10        measured seconds per cell (plus WARMUP=2 s of unmeasured load)
#   CONCURRENCY="8 32"
#   ROUNDS=2           each cell is run this many times, audited and unaudited in turn
#   POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test   an admin URL; a scratch
#                      database beside it is created per run ("" skips PostgreSQL)
#   RESULTS=<dir>      where the per-cell JSON results go (default: a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-8 32}"
ROUNDS="${ROUNDS:-2}"
POSTGRES_URL="${POSTGRES_URL-postgres://postgres@127.0.0.1:5432/test}"
SECRET="bench-client-secret-$(date +%s)-$$"

bench_machine "PostgreSQL: ${POSTGRES_URL:-skipped}"

echo "## build"
scripts/deps.sh build postgresql-client
cargo build --release --locked -p idp-server --bin idp
AUDITED="$ROOT/target/release/idp"
CARGO_TARGET_DIR="$ROOT/target/bench-unaudited" \
  cargo build --release --locked -p idp-server --bin idp --features bench-unaudited
UNAUDITED="$ROOT/target/bench-unaudited/release/idp"
(cd bench/load && cargo build --release --locked)
LOAD="$ROOT/bench/load/target/release/oidc-load"
IDP="$AUDITED"
echo

bench_workdir
RESULTS="${RESULTS:-$WORK/results}"
mkdir -p "$RESULTS"
bench_dev_pki
SECRET_SHA256="$(printf '%s' "$SECRET" | sha256sum | cut -d' ' -f1)"
CLIENT="
[[oidc.clients]]
client_id = \"bench-es256\"
name = \"Bench RP (ES256)\"
secret_sha256 = \"$SECRET_SHA256\"
auth_method = \"client_secret_basic\"
redirect_uris = [\"https://rp.example/cb\"]
scopes = [\"openid\", \"profile\", \"hpki\"]
pre_approved = true
audience = \"regional_network\"
id_token_signed_response_alg = \"ES256\"
"

psql_admin() { psql "$POSTGRES_URL" -v ON_ERROR_STOP=1 -qtAc "$1" >/dev/null; }

# run <build: audited|unaudited> <database: sqlite|postgres> <round>: one fresh IdP, every
# concurrency.
run() {
  local build=$1 db=$2 round=$3 dir="$WORK/$1-$2-$3" url
  IDP="$AUDITED"
  [ "$build" = unaudited ] && IDP="$UNAUDITED"
  case "$db" in
    sqlite) url="sqlite://$dir/idp.db" ;;
    postgres)
      local name="idp_bench_audit_$$"
      psql_admin "DROP DATABASE IF EXISTS $name WITH (FORCE)"
      psql_admin "CREATE DATABASE $name"
      url="${POSTGRES_URL%/*}/$name"
      ;;
  esac
  local pub login
  pub=$(free_port); login=$(free_port)
  bench_idp_config "$dir" "$pub" "$login" memory "$CLIENT" "$url"
  bench_start_idp "$dir" "$pub" "$login"
  for c in $CONCURRENCY; do
    "$LOAD" run --mode flow --issuer "https://localhost:$pub" --ca "$CA" \
      --card-chain "$CARD_CHAIN" --card-key "$CARD_KEY" \
      --client-id bench-es256 --client-secret "$SECRET" --alg ES256 \
      --concurrency "$c" --server-pid "$IDP_PID" \
      --label "$build $db c=$c round $round" --json "$RESULTS/$build-$db-c$c-r$round.json" \
      --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
      || echo "(the load generator reported errors; they are counted in the table)"
  done
  if [ "$build" = audited ]; then
    echo "audit records: $("$IDP" audit verify -c "$dir/idp.toml")"
  fi
  stop "$IDP_PID"
}

DATABASES="sqlite"
[ -n "$POSTGRES_URL" ] && DATABASES="sqlite postgres"
for db in $DATABASES; do
  for round in $(seq 1 "$ROUNDS"); do
    run audited "$db" "$round"
    run unaudited "$db" "$round"
  done
done
[ -n "$POSTGRES_URL" ] && psql_admin "DROP DATABASE IF EXISTS idp_bench_audit_$$ WITH (FORCE)"

echo
echo "## results (load average at end: $(cut -d' ' -f1-3 /proc/loadavg))"
python3 - "$RESULTS" "$ROUNDS" $DATABASES -- $CONCURRENCY <<'PY'
import json, sys, pathlib
results, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
split = sys.argv.index("--")
databases, concurrency = sys.argv[3:split], sys.argv[split + 1:]
print("| database | concurrency | audited flows/s | unaudited flows/s | ratio | audited p99 ms | unaudited p99 ms | IdP CPU ms/flow audited / unaudited | errors audited / unaudited |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for db in databases:
    for c in concurrency:
        def load(build):
            reports = [json.loads((results / f"{build}-{db}-c{c}-r{r}.json").read_text()) for r in range(1, rounds + 1)]
            errors = sum(r["errors"] for r in reports)
            rate = sum(r["per_second"] for r in reports) / rounds
            p99 = sum(r["latency"]["p99_ms"] for r in reports) / rounds
            cpu = sum(r["server_cpu_ms_per_op"] or 0 for r in reports) / rounds
            return rate, p99, cpu, errors
        a, u = load("audited"), load("unaudited")
        print(f"| {db} | {c} | {a[0]:.1f} | {u[0]:.1f} | {a[0] / u[0]:.2f} | {a[1]:.1f} | {u[1]:.1f} | {a[2]:.2f} / {u[2]:.2f} | {a[3]} / {u[3]} |")
PY
