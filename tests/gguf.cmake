# Tests of issue 5 (gguf); included from tests/tests.cmake.

# The reader and writer: conversions, a file with every type written and read
# back, every truncation and many corruptions refused, a mutation fuzz, and
# the real vocabulary files in shared/data/gguf. Leaves gguf_test_all.gguf and
# gguf_test_nested.gguf in the build directory for the cross-check below.
add_executable(test_gguf tests/test_gguf.c)
target_include_directories(test_gguf PRIVATE src)
target_link_libraries(test_gguf rotary)
add_test(NAME test_gguf COMMAND test_gguf WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
set_tests_properties(test_gguf PROPERTIES
  ENVIRONMENT "ROTARY_DATA_DIR=${ROTARY_DATA_DIR}"
  FIXTURES_SETUP gguf_file)

# gguf_list FILE: a canonical JSON listing of a GGUF file from our reader,
# compared with the one tests/gguf_npm/list.mjs makes with @huggingface/gguf.
add_executable(gguf_list tests/gguf_list.c)
target_link_libraries(gguf_list rotary)

# The cross-check takes a list of files (add yours before --damaged). The
# copies of llama.cpp's vocabulary files in shared/data are damaged (they went
# through a UTF-8 text conversion): after --damaged, both readers refusing
# them counts as agreement. It fails when node or tests/gguf_npm/node_modules
# is missing: run scripts/install-deps.sh.
add_test(NAME gguf_npm_compare
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/gguf_npm/compare.sh $<TARGET_FILE:gguf_list>
    ${CMAKE_BINARY_DIR}/gguf_test_all.gguf
    ${CMAKE_BINARY_DIR}/gguf_test_nested.gguf
    --damaged
    ${ROTARY_DATA_DIR}/gguf/ggml-vocab-llama-spm.gguf
    ${ROTARY_DATA_DIR}/gguf/ggml-vocab-gpt-2.gguf
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
set_tests_properties(gguf_npm_compare PROPERTIES
  FIXTURES_REQUIRED gguf_file)
