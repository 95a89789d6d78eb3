#!/usr/bin/env bash
# Installs the Debian packages a command needs when they are missing.
# Usage: scripts/deps.sh PACKAGE...   ("build" stands for what building the workspace needs)
set -euo pipefail
# Building: C toolchain, OpenSSL, libpq (diesel), and samael's xmlsec bindings (libxml2,
# libxmlsec1 found through xmlsec1-config, libclang for bindgen).
build=(build-essential pkg-config libssl-dev libpq-dev libxml2-dev libxmlsec1-dev libclang-dev)
packages=()
for pkg in "$@"; do
  if [ "$pkg" = build ]; then packages+=("${build[@]}"); else packages+=("$pkg"); fi
done
missing=()
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
