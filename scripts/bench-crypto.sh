#!/usr/bin/env bash
# Measures the crypto backends for ID-token signing (docs/BENCHMARKS.md, "ID-token
# signing: crypto backends"): jsonwebtoken 11 with `rust_crypto` and with `aws_lc_rs`,
# and ring 0.17 directly (a measurement of the primitive only), signing and verifying
# RS256 / ES256 (EdDSA for reference); then the clean build time of each backend alone
# (release; also dev for the IdP's crypto set). Prints a table of both.
#
# Usage: scripts/bench-crypto.sh [--no-build-cost | --build-cost-only]
#
# The benchmark package bench/crypto-backends is its own cargo workspace; everything it
# builds goes to bench/crypto-backends/target (git-ignored). Criterion runs with
# --warm-up-time 1 --measurement-time 3 (about 1 minute of measuring, plus the builds).
set -euo pipefail
cd "$(dirname "$0")/.."
PKG="$PWD/bench/crypto-backends"
export CARGO_TARGET_DIR="$PKG/target"
CRITERION_ARGS=(--warm-up-time 1 --measurement-time 3)

run_benches=1
run_build_cost=1
case "${1:-}" in
  "") ;;
  --no-build-cost) run_build_cost=0 ;;
  --build-cost-only) run_benches=0 ;;
  *) echo "usage: $0 [--no-build-cost | --build-cost-only]" >&2; exit 2 ;;
esac

command -v python3 >/dev/null || scripts/deps.sh python3
[ -x /usr/bin/time ] || scripts/deps.sh time

echo "## machine"
echo "nproc: $(nproc)"
lscpu | grep -E '^(Architecture|Model name|CPU\(s\)|Thread\(s\) per core|Core\(s\) per socket):' || true
grep MemTotal /proc/meminfo || true
rustc --version
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

if [ "$run_benches" = 1 ]; then
  # Fresh results only: a backend whose run fails must not show an older figure.
  rm -rf "$CARGO_TARGET_DIR/criterion/sign" "$CARGO_TARGET_DIR/criterion/verify"
  (
    cd "$PKG"
    cargo bench --locked --bench jwt -- "${CRITERION_ARGS[@]}"
    cargo bench --locked --bench jwt --no-default-features --features aws_lc_rs -- "${CRITERION_ARGS[@]}"
    cargo bench --locked --bench ring_primitive -- "${CRITERION_ARGS[@]}"
  )
  echo
  echo "## ID-token signing and verification (median per operation; ratio = RustCrypto time / this time)"
  python3 - "$CARGO_TARGET_DIR/criterion" <<'EOF'
import json, os, sys

root = sys.argv[1]
backends = ["jwt-rust_crypto", "jwt-aws_lc_rs", "ring-primitive", "ring-primitive-keyparse"]
rows = []
for op in ["sign", "verify"]:
    for alg in ["RS256", "ES256", "EdDSA"]:
        base = None
        for backend in backends:
            path = os.path.join(root, op, backend, alg, "new", "estimates.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                median = json.load(f)["median"]
            ns = median["point_estimate"]
            lo = median["confidence_interval"]["lower_bound"]
            hi = median["confidence_interval"]["upper_bound"]
            if backend == "jwt-rust_crypto":
                base = ns
            ratio = f"{base / ns:.2f}x" if base else "-"
            rows.append((op, alg, backend, f"{ns / 1000:.1f}", f"[{lo / 1000:.1f}, {hi / 1000:.1f}]",
                         f"{1e9 / ns:,.0f}", ratio))
head = ("op", "alg", "backend", "median us/op", "95% CI (us)", "ops/s", "vs rust_crypto")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for r in rows:
    print("| " + " | ".join(r) + " |")
EOF
  echo
fi

if [ "$run_build_cost" = 1 ]; then
  # Each backend alone: a tiny binary depending on just that crate (plus serde_json),
  # pinned to the versions of bench/crypto-backends/Cargo.lock, built with
  # `cargo build --release --offline` (and `--profile dev` for the idp-set crates) from
  # an empty target dir.
  (cd "$PKG" && cargo fetch --locked >/dev/null)
  work="$CARGO_TARGET_DIR/build-cost"
  rm -rf "$work"
  mkdir -p "$work"
  jwt_main='fn main() {
    let claims = serde_json::json!({"iss": "https://idp.example.jp", "sub": "x", "exp": 1});
    let key = jsonwebtoken::EncodingKey::from_secret(b"secret");
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key);
    println!("{}", token.map(|t| t.len()).unwrap_or(0));
}'
  ring_main='fn main() {
    let digest = ring::digest::digest(&ring::digest::SHA256, serde_json::json!({"sub": "x"}).to_string().as_bytes());
    println!("{}", digest.as_ref().len());
}'
  dev_profile='[profile.dev]
debug = "line-tables-only"
[profile.dev.package.num-bigint-dig]
opt-level = 3
[profile.dev.package.rsa]
opt-level = 3
[profile.dev.package.ring]
opt-level = 3'
  variant() { # name, dependency lines, main.rs
    local dir="$work/$1"
    mkdir -p "$dir/src"
    # The dev profile is the IdP's (root Cargo.toml), for the dev-build rows.
    printf '[package]\nname = "build-cost-%s"\nversion = "0.0.0"\nedition = "2024"\npublish = false\n\n[workspace]\n\n[dependencies]\nserde_json = "1"\n%s\n\n%s\n' \
      "$1" "$2" "$dev_profile" >"$dir/Cargo.toml"
    printf '%s\n' "$3" >"$dir/src/main.rs"
    cp "$PKG/Cargo.lock" "$dir/Cargo.lock"
  }
  variant jsonwebtoken-none 'jsonwebtoken = { version = "11.1", default-features = false, features = ["use_pem"] }' "$jwt_main"
  variant jsonwebtoken-rust_crypto 'jsonwebtoken = { version = "11.1", default-features = false, features = ["use_pem", "rust_crypto"] }' "$jwt_main"
  variant jsonwebtoken-aws_lc_rs 'jsonwebtoken = { version = "11.1", default-features = false, features = ["use_pem", "aws_lc_rs"] }' "$jwt_main"
  variant ring 'ring = "0.17"' "$ring_main"
  # The IdP's crypto set (idp-core already builds ring and rsa for key generation, TLS
  # and HPKI), so the difference between these two is what switching the backend costs.
  idp_set='ring = "0.17"
rsa = { version = "0.9", features = ["sha2"] }'
  variant idp-set-rust_crypto "${idp_set}
jsonwebtoken = { version = \"11.1\", default-features = false, features = [\"use_pem\", \"rust_crypto\"] }" "$jwt_main"
  variant idp-set-aws_lc_rs "${idp_set}
jsonwebtoken = { version = \"11.1\", default-features = false, features = [\"use_pem\", \"aws_lc_rs\"] }" "$jwt_main"

  echo "## clean build of each backend alone"
  echo "system tools: cmake=$(command -v cmake || echo none) clang=$(command -v clang || echo none) nasm=$(command -v nasm || echo none) cc=$(cc --version | head -1)"
  echo "| crate | profile | wall s | user+sys CPU s | crates compiled | binary KiB | load avg before |"
  echo "|---|---|---:|---:|---:|---:|---|"
  # The IdP's tests build the dev profile, so the two idp-set crates are built in both.
  for build in jsonwebtoken-none:release jsonwebtoken-rust_crypto:release \
    jsonwebtoken-aws_lc_rs:release ring:release idp-set-rust_crypto:release \
    idp-set-aws_lc_rs:release idp-set-rust_crypto:dev idp-set-aws_lc_rs:dev; do
    name=${build%%:*}
    profile=${build##*:}
    dir="$work/$name"
    load=$(cut -d' ' -f1 /proc/loadavg)
    (
      cd "$dir"
      export CARGO_TARGET_DIR="$dir/target-$profile"
      /usr/bin/time -f '%e %U %S' -o "$dir/time-$profile.txt" \
        cargo build --profile "$profile" --offline >"$dir/build-$profile.log" 2>&1
    ) || { echo "build of $name ($profile) failed; see $dir/build-$profile.log" >&2; exit 1; }
    read -r wall user sys <"$dir/time-$profile.txt"
    crates=$(grep -c '^ *Compiling ' "$dir/build-$profile.log" || true)
    outdir=$profile
    [ "$profile" = dev ] && outdir=debug
    size=$(( $(stat -c %s "$dir/target-$profile/$outdir/build-cost-$name") / 1024 ))
    printf '| %s | %s | %.1f | %.1f | %s | %s | %s |\n' "$name" "$profile" "$wall" \
      "$(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')" "$crates" "$size" "$load"
  done
fi
