#!/usr/bin/env bash
# Signed SAML responses (docs/BENCHMARKS.md, "SAML responses"), in one run on this machine:
#
# 1. response generation alone: `idp_saml::response::success` (criterion,
#    idp/saml/benches/response.rs) and samlify (bench/samlify/response.mjs, the locked
#    latest release installed here) producing the same login response, signed with the
#    same RSA-2048 key: Response and Assertion signed, and the Assertion only;
# 2. complete SP-initiated logins against a running IdP (bench/load `saml-load`: unsigned
#    AuthnRequest by HTTP-Redirect, card login over a new mutual-TLS connection, the
#    pre-approved SP's auto-POST page, the SAMLResponse decoded and checked) at
#    concurrency 1, 8 and 32, with the IdP's CPU time per login;
#
# then prints the machine and markdown tables with the ratios. samlify is a library, not
# an IdP: there is no samlify login to compare the complete logins with.
#
# Usage: scripts/bench-saml.sh
# Environment:
#   GEN_SECONDS=10     measured seconds per generation benchmark (criterion's
#                      --measurement-time, samlify's --seconds), after GEN_WARMUP=3 s
#   GEN_ROUNDS=2       rounds of the generation pair (IdP, then samlify), each reported:
#                      on a shared VM one round can be slowed by the neighbours
#   DURATION=10        measured seconds per login cell (after WARMUP=2 s of unmeasured load)
#   CONCURRENCY="1 8 32"
#   ASSERTION_ONLY_CONCURRENCY="32"   extra login cells against a second SP registered with
#                      sign_response = false (only the Assertion signed); "" to skip
#   SAMLIFY_VERSION    install this samlify version instead of the locked one (e.g.
#                      "latest"); default: `npm ci` of bench/samlify/package-lock.json
#   NODE=node          the node binary that runs samlify
#   RESULTS=<dir>      where the JSON results and the sample responses go (default: a
#                      temporary folder)
#
# Everything runs on this machine: the IdP listens on 127.0.0.1 and shares the CPUs with
# the load generator (bench/load, its own cargo workspace, built into bench/load/target).
# The IdP runs with SQLite and the in-process ephemeral store.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=scripts/bench-common.sh
source scripts/bench-common.sh
GEN_SECONDS="${GEN_SECONDS:-10}"
GEN_WARMUP="${GEN_WARMUP:-3}"
GEN_ROUNDS="${GEN_ROUNDS:-2}"
DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONCURRENCY="${CONCURRENCY:-1 8 32}"
ASSERTION_ONLY_CONCURRENCY="${ASSERTION_ONLY_CONCURRENCY-32}"
NODE="${NODE:-node}"
STARTED=$SECONDS

command -v "$NODE" >/dev/null || { echo "node is required" >&2; exit 2; }
command -v npm >/dev/null || { echo "npm is required" >&2; exit 2; }
command -v openssl >/dev/null || { echo "openssl is required" >&2; exit 2; }

bench_machine "node: $("$NODE" --version)" "$(openssl version)"

echo "## build"
BUILD_STARTED=$SECONDS
scripts/deps.sh build
cargo build --release --locked -p idp-server --bin idp
IDP="$ROOT/target/release/idp"
cargo bench --locked -p idp-saml --bench response --no-run
(cd bench/load && cargo build --release --locked)
LOAD="$ROOT/bench/load/target/release/saml-load"
if [ -n "${SAMLIFY_VERSION:-}" ]; then
  npm install --prefix bench/samlify --no-save --no-audit --no-fund \
    "samlify@$SAMLIFY_VERSION" >/dev/null
else
  npm ci --prefix bench/samlify --no-audit --no-fund >/dev/null
fi
SAMLIFY="$("$NODE" -p "require('./bench/samlify/node_modules/samlify/package.json').version")"
echo "samlify $SAMLIFY; builds and installs took $((SECONDS - BUILD_STARTED)) s"
echo

bench_workdir
RESULTS="${RESULTS:-$WORK/results}"
mkdir -p "$RESULTS"
MEASURE_STARTED=$SECONDS

# ----- the keys: the IdP's SAML signing key (both generators sign with it), test PKI ---
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 -subj "/CN=bench SAML IdP" \
  -keyout "$WORK/saml.key" -out "$WORK/saml.crt" 2>/dev/null
bench_dev_pki

# ----- 1. response generation alone -----------------------------------------------------
# CPU time stolen by the hypervisor (and the machine's idle share) since the last call.
steal_mark() { read -r _ STEAL_U STEAL_N STEAL_S STEAL_I STEAL_W STEAL_Q STEAL_SQ STEAL_ST _ </proc/stat; }
steal_since() {
  local u=$STEAL_U n=$STEAL_N s=$STEAL_S i=$STEAL_I w=$STEAL_W q=$STEAL_Q sq=$STEAL_SQ st=$STEAL_ST
  steal_mark
  local total=$(((STEAL_U - u) + (STEAL_N - n) + (STEAL_S - s) + (STEAL_I - i) + (STEAL_W - w) + (STEAL_Q - q) + (STEAL_SQ - sq) + (STEAL_ST - st)))
  [ "$total" -gt 0 ] || total=1
  echo "CPU steal $((100 * (STEAL_ST - st) / total)) %, idle $((100 * (STEAL_I - i) / total)) % of both cores"
}
echo "## response generation (single thread, RSA-2048, ${GEN_SECONDS} s measured per variant, $GEN_ROUNDS rounds)"
for round in $(seq 1 "$GEN_ROUNDS"); do
  echo "### round $round"
  steal_mark
  SAML_BENCH_KEY="$WORK/saml.key" SAML_BENCH_CERT="$WORK/saml.crt" SAML_BENCH_SAMPLE_DIR="$RESULTS" \
    cargo bench --locked -p idp-saml --bench response -- \
    --warm-up-time "$GEN_WARMUP" --measurement-time "$GEN_SECONDS" 2>&1 \
    | grep -E '^(idp-|response/|  +time:)' || true
  for id in signed_response_and_assertion assertion_only; do
    cp "target/criterion/response/$id/new/estimates.json" "$RESULTS/criterion-$id-r$round.estimates"
  done
  echo "IdP: $(steal_since)"
  "$NODE" bench/samlify/response.mjs --key "$WORK/saml.key" --cert "$WORK/saml.crt" \
    --seconds "$GEN_SECONDS" --warmup-seconds "$GEN_WARMUP" --sample-dir "$RESULTS" \
    --json "$RESULTS/samlify-r$round.generation"
  echo "samlify: $(steal_since)"
done
echo

# ----- 2. complete logins against a running IdP -------------------------------------------
SP_ID="https://sp.bench.example/saml"
ACS="https://sp.bench.example/saml/acs"
SP2_ID="https://sp2.bench.example/saml"
ACS2="https://sp2.bench.example/saml/acs"
sp_metadata() {
  cat <<EOF
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="$1">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="false" WantAssertionsSigned="true">
    <md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="$2" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
EOF
}
sp_metadata "$SP_ID" "$ACS" >"$WORK/sp.xml"
sp_metadata "$SP2_ID" "$ACS2" >"$WORK/sp2.xml"
SAML_TABLE="
[saml]
signing_key = \"$WORK/saml.key\"
signing_cert = \"$WORK/saml.crt\"

[[saml.sps]]
metadata_file = \"$WORK/sp.xml\"
display_name = \"Bench SP\"
claims = [\"name\", \"family_name\", \"given_name\", \"email\", \"hpki_role\"]
pre_approved = true

[[saml.sps]]
metadata_file = \"$WORK/sp2.xml\"
display_name = \"Bench SP (assertion signature only)\"
claims = [\"name\", \"family_name\", \"given_name\", \"email\", \"hpki_role\"]
pre_approved = true
sign_response = false
"
PUB=$(free_port); LOGIN=$(free_port)
bench_idp_config "$WORK/idp" "$PUB" "$LOGIN" memory "$SAML_TABLE"
bench_start_idp "$WORK/idp" "$PUB" "$LOGIN"
echo "## complete SP-initiated logins: IdP (pid $IDP_PID) https://localhost:$PUB, login origin https://localhost:$LOGIN"
echo "RSS after start: $(rss_kb "$IDP_PID") kB"
# login_cell <label> <concurrency> <SP entity ID> <ACS> <signatures>
login_cell() {
  "$LOAD" run --public "https://localhost:$PUB" --ca "$CA" \
    --card-chain "$CARD_CHAIN" --card-key "$CARD_KEY" \
    --sp-entity-id "$3" --acs-url "$4" --signatures "$5" \
    --concurrency "$2" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
    --server-pid "$IDP_PID" --label "$1" --json "$RESULTS/login-$(echo "$1" | tr ' /=,' '____').json"
}
for c in $CONCURRENCY; do
  login_cell "Response and Assertion signed, c=$c" "$c" "$SP_ID" "$ACS" 2
done
for c in $ASSERTION_ONLY_CONCURRENCY; do
  login_cell "Assertion signed only, c=$c" "$c" "$SP2_ID" "$ACS2" 1
done
echo "IdP RSS after the logins: $(rss_kb "$IDP_PID") kB (peak $(hwm_kb "$IDP_PID") kB)"
stop "$IDP_PID"
echo

# ----- tables ---------------------------------------------------------------------------
echo "## results (samlify $SAMLIFY on node $("$NODE" --version); load average at end: $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "### Response generation alone (one thread; ratio = samlify's mean time / the IdP's)"
echo
RESULTS="$RESULTS" GEN_ROUNDS="$GEN_ROUNDS" "$NODE" - <<'EOF'
const fs = require('fs');
const dir = process.env.RESULTS;
const rows = [
  ['Response and Assertion signed', 'signed_response_and_assertion', 'signed-response', 'idp-signed-response.xml'],
  ['Assertion signed only', 'assertion_only', 'assertion-only', 'idp-assertion-only.xml'],
];
console.log('| variant | round | IdP mean µs [95 % CI] | IdP median µs | IdP responses/s | samlify mean µs | samlify p50 µs | samlify p99 µs | samlify responses/s | ratio | bytes IdP / samlify |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const [name, id, variant, sample] of rows) {
  for (let round = 1; round <= Number(process.env.GEN_ROUNDS); round += 1) {
    const e = JSON.parse(fs.readFileSync(`${dir}/criterion-${id}-r${round}.estimates`, 'utf8'));
    const samlify = JSON.parse(fs.readFileSync(`${dir}/samlify-r${round}.generation`, 'utf8'));
    const mean = e.mean.point_estimate / 1000;
    const lo = e.mean.confidence_interval.lower_bound / 1000;
    const hi = e.mean.confidence_interval.upper_bound / 1000;
    const median = e.median.point_estimate / 1000;
    const s = samlify.find((r) => r.variant === variant);
    const idpBytes = fs.statSync(`${dir}/${sample}`).size;
    const ratio = s.mean_us / mean;
    console.log(`| ${name} | ${round} | ${mean.toFixed(0)} [${lo.toFixed(0)}, ${hi.toFixed(0)}] | ${median.toFixed(0)} | ${(1e6 / mean).toFixed(1)} | ${s.mean_us.toFixed(0)} | ${s.p50_us.toFixed(0)} | ${s.p99_us.toFixed(0)} | ${s.per_second.toFixed(1)} | **${ratio.toFixed(2)}×** | ${idpBytes} / ${s.bytes} |`);
  }
}
console.log();
console.log('ratio = samlify mean time ÷ IdP mean time = IdP responses/s ÷ samlify responses/s, same round. Target: at least 5×.');
console.log('IdP: criterion mean per response (idp_saml::response::success, XML string); samlify: mean over its measured window (createLoginResponse, base64 string).');
EOF
echo
echo "### Complete SP-initiated logins against the running IdP (new card mTLS handshake per login)"
echo
"$LOAD" table "$RESULTS"
echo
echo "samlify is a library without a card login or HTTP endpoints: there is no samlify login to compare these with."
echo "Measurements took $((SECONDS - MEASURE_STARTED)) s (whole script $((SECONDS - STARTED)) s)."
