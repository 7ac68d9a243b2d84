#!/usr/bin/env bash
# The single source of truth for the Debian 12 packages libmacula needs to build, test and
# benchmark. Idempotent: when every package is present it only runs dpkg-query and exits.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake pkg-config ccache python3
  # QUIC / HTTP/3 / TLS / crypto
  libngtcp2-dev libngtcp2-crypto-gnutls-dev libnghttp3-dev libgnutls28-dev libssl-dev
  # event loop (Boost.Asio, Beast), tests, benchmarks
  libboost-dev catch2 libbenchmark-dev
  # real peers for interop tests and side-by-side benchmarks
  ngtcp2-client ngtcp2-server nats-server libnats-dev
  # fuzzing runtime for clang's libFuzzer
  clang libclang-rt-14-dev
  # the cluster harness (tests/cluster): namespaces, loss and partitions, bandwidth caps,
  # node keys, status pages
  iproute2 nftables curl openssl
  # pkg-config --static macula-cpp: gnutls's private dependencies that Debian splits off
  libunistring-dev
  # the Python package (capi/python): its tests, and pip install of the built tree
  python3-pytest python3-pip python3-setuptools python3-venv
  # the command-line tool (examples/cli): its flags and its --config file
  libcli11-dev libtomlplusplus-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1
  fi
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
