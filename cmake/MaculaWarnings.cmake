# -Wall -Wextra -Werror applies to our own targets only (never to third-party headers,
# which are included as SYSTEM by their imported targets).
#
# GCC 12 at -O2/-O3 reports false positives from inside libstdc++ for code we cannot change:
# -Wrestrict on `"k" + std::to_string(n)` (GCC PR 105651) and -Wmaybe-uninitialized on
# moved-from std::optional (GCC PR 105593 family). Both are off for GCC 12 only; GCC 13+
# and clang keep them.
function(macula_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor
                         $<$<COMPILE_LANGUAGE:CXX>:-Wold-style-cast>)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-restrict -Wno-maybe-uninitialized)
  endif()
endfunction()
