# The libraries rotary links (Debian packages: scripts/install-deps.sh),
# shared by CMakeLists.txt and fuzz/CMakeLists.txt.
find_package(OpenMP REQUIRED)
# OpenBLAS built for OpenMP (Debian libopenblas0-openmp) runs single-threaded
# when called from inside our parallel regions instead of oversubscribing the
# cores; prefer it over whichever variant the system alternative points to.
find_library(OPENBLAS_OPENMP NAMES libopenblas.so.0
  PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
if(OPENBLAS_OPENMP)
  set(BLAS_LIBRARIES ${OPENBLAS_OPENMP})
  message(STATUS "BLAS: ${OPENBLAS_OPENMP}")
else()
  set(BLA_VENDOR OpenBLAS)
  find_package(BLAS REQUIRED)
endif()
find_path(CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas REQUIRED)
find_path(CJSON_INCLUDE_DIR cjson/cJSON.h REQUIRED)
find_library(CJSON_LIBRARY cjson REQUIRED)
# PCRE2 (Unicode properties) runs the GPT-2 pre-tokenizer pattern.
find_path(PCRE2_INCLUDE_DIR pcre2.h REQUIRED)
find_library(PCRE2_LIBRARY pcre2-8 REQUIRED)
