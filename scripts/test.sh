#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests, storage tests on SQLite and PostgreSQL,
# ephemeral-store tests in process and on Redis, and the end-to-end suite (real TLS,
# PIN-protected SoftHSM2 cards through curl's PKCS#11 engine).
#
# PostgreSQL and Redis: IDP_TEST_POSTGRES_URL and IDP_TEST_REDIS_URL (defaults below).
# When they are not reachable the script starts local servers if it can; in CI (CI set)
# an unreachable service fails the run instead of skipping its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# xmlsec1 is the independent signature check of the SAML tests and pysaml2's signer.
# chromium and a Japanese font: the portal's browser test (screenshots readable in Japanese).
scripts/deps.sh build curl xmlsec1 softhsm2 libengine-pkcs11-openssl p11-kit postgresql-client redis-tools \
  chromium fonts-ipafont-gothic

export IDP_TEST_POSTGRES_URL="${IDP_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export IDP_TEST_REDIS_URL="${IDP_TEST_REDIS_URL:-redis://127.0.0.1:6379}"

postgres_up() { psql "$IDP_TEST_POSTGRES_URL" -qtAc 'select 1' >/dev/null 2>&1; }
redis_up() { redis-cli -u "$IDP_TEST_REDIS_URL" ping 2>/dev/null | grep -q PONG; }

if ! postgres_up; then
  scripts/deps.sh postgresql
  for cluster in /etc/postgresql/*/main; do
    [ -d "$cluster" ] || continue
    version=$(basename "$(dirname "$cluster")")
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
  done
  for _ in $(seq 1 30); do postgres_up && break; sleep 1; done
fi
if ! redis_up; then
  scripts/deps.sh redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
fi
for service in postgres redis; do
  if ! "${service}_up"; then
    if [ -n "${CI:-}" ]; then
      echo "error: $service is not reachable; CI does not skip its tests" >&2
      exit 1
    fi
    echo "warning: $service is not reachable; its tests will be skipped" >&2
    [ "$service" = postgres ] && unset IDP_TEST_POSTGRES_URL
    [ "$service" = redis ] && unset IDP_TEST_REDIS_URL
  fi
done

cargo fmt --all --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --quiet -p idp-server --bin idp
# The doctor portal and the kit's example network, which the end-to-end tests start.
cargo build --quiet -p hpki-portal --bin hpki-portal
cargo build --quiet -p hpki-rp-kit --example hareyaka
# Third-party relying parties that conformance/tests/third_party_*.rs drive against the
# live IdP (node openid-client, Python Authlib and pysaml2).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || scripts/deps.sh nodejs npm
npm ci --prefix conformance/clients/node --no-audit --no-fund --loglevel=error >/dev/null
PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check \
  -r conformance/clients/python/requirements.txt
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
