# Finds every dependency; a missing one stops configure and names the Debian package
# (cmake/install-deps.sh installs them all).
find_package(PkgConfig QUIET)
if(NOT PKG_CONFIG_FOUND)
  message(FATAL_ERROR "pkg-config not found: apt-get install pkg-config (or run cmake/install-deps.sh)")
endif()

function(macula_require_pkg target module debian_pkg)
  pkg_check_modules(${target} QUIET IMPORTED_TARGET GLOBAL ${module})
  if(NOT ${target}_FOUND)
    message(FATAL_ERROR "${module} not found: apt-get install ${debian_pkg} (or run cmake/install-deps.sh)")
  endif()
endfunction()

# The transport layer links these; the core components do not need them, but the project
# is one product and configure checks the whole set up front.
macula_require_pkg(MACULA_NGTCP2 libngtcp2 libngtcp2-dev)
macula_require_pkg(MACULA_NGTCP2_CRYPTO libngtcp2_crypto_gnutls libngtcp2-crypto-gnutls-dev)
macula_require_pkg(MACULA_NGHTTP3 libnghttp3 libnghttp3-dev)
macula_require_pkg(MACULA_GNUTLS gnutls libgnutls28-dev)
macula_require_pkg(MACULA_OPENSSL openssl libssl-dev)

find_package(Boost 1.74 QUIET)
if(NOT Boost_FOUND)
  message(FATAL_ERROR "Boost headers (Asio) not found: apt-get install libboost-dev (or run cmake/install-deps.sh)")
endif()

find_package(Threads REQUIRED)

if(MACULA_BUILD_TESTS)
  find_package(Catch2 2 QUIET)
  if(NOT Catch2_FOUND)
    message(FATAL_ERROR "Catch2 v2 not found: apt-get install catch2 (or run cmake/install-deps.sh)")
  endif()
endif()
if(MACULA_BUILD_BENCHMARKS)
  find_package(benchmark QUIET)
  if(NOT benchmark_FOUND)
    message(FATAL_ERROR "Google Benchmark not found: apt-get install libbenchmark-dev (or run cmake/install-deps.sh)")
  endif()
endif()
