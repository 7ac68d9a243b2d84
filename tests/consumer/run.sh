#!/usr/bin/env bash
# Builds and runs five consumers of a libmacula installed under PREFIX (CI installs it to a
# temporary, non-default prefix): C++ and C, each with find_package(Macula) and with
# pkg-config (macula-cpp.pc: the C++ API, static; macula.pc: the C ABI, libmacula.so). The
# C++ pkg-config build is done twice, with and without --static; and the `macula` tool from
# its sources, which must need nothing but public headers. Usage: run.sh PREFIX
set -euo pipefail
prefix=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
libdir=$(dirname "$(find "$prefix" -name 'macula.pc' -path '*pkgconfig*' | head -1)")
[ -n "$libdir" ] || { echo "consumers: no macula.pc under $prefix"; exit 1; }
export PKG_CONFIG_PATH="$libdir"
lib=$(dirname "$libdir")

echo "== find_package(Macula): C++ and C"
cmake -S "$here" -B "$work/cmake" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cmake" -j2 >/dev/null
"$work/cmake/consumer"
LD_LIBRARY_PATH="$lib" "$work/cmake/consumer_c" >/dev/null && echo "consumer_c (find_package): ok"

echo "== pkg-config: macula-cpp (C++ API, static library) and macula (C ABI)"
# Relocatable: the files locate the prefix from their own folder, not from configure time.
pkg-config --variable=prefix macula-cpp | grep -q "^$libdir/" || { echo "macula-cpp.pc: prefix not relative to itself"; exit 1; }
# shellcheck disable=SC2046
g++ -std=c++20 -O1 "$here/main.cpp" -o "$work/cpp_pc" $(pkg-config --cflags --libs macula-cpp)
"$work/cpp_pc"
# shellcheck disable=SC2046
g++ -std=c++20 -O1 "$here/main.cpp" -o "$work/cpp_pc_static" $(pkg-config --static --cflags --libs macula-cpp)
"$work/cpp_pc_static" >/dev/null && echo "consumer (pkg-config --static macula-cpp): ok"
# shellcheck disable=SC2046
cc -std=c11 "$here/../../examples/c/hello.c" -o "$work/c_pc" $(pkg-config --cflags --libs macula)
LD_LIBRARY_PATH="$lib" "$work/c_pc" >/dev/null && echo "consumer_c (pkg-config macula): ok"

echo "== the macula tool, built from its sources against the installed library (public headers only)"
# shellcheck disable=SC2046
g++ -std=c++20 -O1 -I"$here/../../examples/cli" "$here"/../../examples/cli/*.cpp -o "$work/macula" \
  $(pkg-config --cflags --libs macula-cpp CLI11 tomlplusplus)
"$work/macula" --version | grep -q "^macula " || { echo "installed-tree macula: --version"; exit 1; }
"$work/macula" keygen --key "$work/k" --cert "$work/c" | grep -Eq "^[0-9a-f]{64}$" || { echo "installed-tree macula: keygen"; exit 1; }
echo "macula tool (pkg-config macula-cpp CLI11 tomlplusplus): ok"
echo "consumers: all five built and ran"
