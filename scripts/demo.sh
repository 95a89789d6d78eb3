#!/usr/bin/env bash
# Starts the whole system on embedded defaults: SQLite, the in-process ephemeral store,
# a generated test PKI with test cards, TLS on https://localhost:8443 and :8444.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
exec cargo run --quiet -p idp-server --bin idp -- demo "$@"
