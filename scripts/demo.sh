#!/usr/bin/env bash
# Starts the whole system on embedded defaults: SQLite, the in-process ephemeral store,
# a generated test PKI with test cards, the IdP on https://localhost:8443 and :8444, and
# the doctor portal on https://localhost:9443, registered as the IdP's client.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cargo build --quiet -p idp-server --bin idp -p hpki-portal --bin hpki-portal
dir=var/demo
prev=""
for arg in "$@"; do
  [ "$prev" = --dir ] && dir="$arg"
  prev="$arg"
done
target="${CARGO_TARGET_DIR:-target}"
"$target/debug/idp" demo "$@" &
idp=$!
trap 'kill "$idp" 2>/dev/null || true' EXIT INT TERM
# The IdP writes portal.toml before it listens; the portal waits for the IdP's discovery.
for _ in $(seq 1 120); do
  [ -f "$dir/portal.toml" ] && break
  kill -0 "$idp" 2>/dev/null || exit 1
  sleep 0.5
done
"$target/debug/hpki-portal" --config "$dir/portal.toml" &
portal=$!
trap 'kill "$idp" "$portal" 2>/dev/null || true' EXIT INT TERM
wait -n "$idp" "$portal"
