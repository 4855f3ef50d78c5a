# C tests: one executable per file, each run by CTest.
set(ROTARY_DATA_DIR "${CMAKE_SOURCE_DIR}/../shared/data" CACHE PATH "shared test data")
find_program(TORCH_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)

foreach(t test_rope test_rope_scaling test_model test_checkpoint test_tokenizer test_train)
  add_executable(${t} tests/${t}.c)
  target_include_directories(${t} PRIVATE src)
  target_link_libraries(${t} rotary)
  add_test(NAME ${t} COMMAND ${t} WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
endforeach()

# Tools the PyTorch parity scripts drive.
foreach(t rope_dump parity_dump)
  add_executable(${t} tests/${t}.c)
  target_include_directories(${t} PRIVATE src)
  target_link_libraries(${t} rotary)
endforeach()

add_test(NAME rope_parity_torch
  COMMAND ${TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/torch/rope_parity.py $<TARGET_FILE:rope_dump>
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
add_test(NAME model_parity_torch
  COMMAND ${TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/torch/model_parity.py $<TARGET_FILE:parity_dump>
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
set_tests_properties(rope_parity_torch model_parity_torch PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")

# The command's handling of bad input.
add_test(NAME cli_bad_input
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cli_bad_input.sh $<TARGET_FILE:rotary_cli>
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})

add_test(NAME cli_train
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cli_train.sh $<TARGET_FILE:rotary_cli> ${CMAKE_SOURCE_DIR}
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})

# rope decay against Python, its plot, and --rope-scaling on train/eval/sample.
add_test(NAME cli_rope
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cli_rope.sh $<TARGET_FILE:rotary_cli>
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})

add_test(NAME cli_compare
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cli_compare.sh $<TARGET_FILE:rotary_cli> ${CMAKE_SOURCE_DIR}
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})

include(tests/gguf.cmake)
include(tests/tokenizers.cmake)
include(tests/decode.cmake)
include(tests/llama.cmake)
include(tests/fuzz.cmake)
include(tests/reliability.cmake)

# The tests that feed outside input (files, options) to our readers; `make
# test` runs them again under AddressSanitizer and UBSan.
set_tests_properties(test_checkpoint test_tokenizer test_gguf test_vocab test_llama2c test_export
  cli_bad_input cli_generate gguf_npm_compare PROPERTIES LABELS reader)

# Under AddressSanitizer, let huge allocations fail with NULL (the tests check
# that we report them) instead of aborting.
if(ROTARY_SANITIZE)
  get_property(all_tests DIRECTORY PROPERTY TESTS)
  set_property(TEST ${all_tests} APPEND PROPERTY ENVIRONMENT
    "ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1:halt_on_error=1"
    "UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1" "ROTARY_SANITIZED=1")
endif()
set_property(TEST test_tokenizer APPEND PROPERTY ENVIRONMENT "ROTARY_DATA_DIR=${ROTARY_DATA_DIR}")

# The training and decoding tests under ThreadSanitizer (`make tsan`): Archer supplies
# OpenMP's synchronisation to TSan; OpenBLAS and libomp themselves are not
# instrumented, so their internals are not checked (ignore_noninstrumented_modules).
if(ROTARY_TSAN)
  get_filename_component(clang_lib_dir "${CMAKE_C_COMPILER}" REALPATH)
  get_filename_component(clang_lib_dir "${clang_lib_dir}" DIRECTORY)
  find_library(ARCHER_LIBRARY archer HINTS "${clang_lib_dir}/../lib" /usr/lib/llvm-14/lib REQUIRED)
  add_executable(tsan_canary tests/tsan_canary.c)
  target_link_libraries(tsan_canary OpenMP::OpenMP_C)
  add_test(NAME tsan_canary COMMAND tsan_canary)
  set_tests_properties(tsan_canary PROPERTIES PASS_REGULAR_EXPRESSION "WARNING: ThreadSanitizer: data race")
  set_tests_properties(tsan_canary test_train test_model test_decode crash_kill PROPERTIES LABELS tsan)
  get_property(all_tests DIRECTORY PROPERTY TESTS)
  set_property(TEST ${all_tests} APPEND PROPERTY ENVIRONMENT "OMP_NUM_THREADS=2"
    "OMP_TOOL_LIBRARIES=${ARCHER_LIBRARY}"
    "TSAN_OPTIONS=halt_on_error=1:exitcode=66:ignore_noninstrumented_modules=1:second_deadlock_stack=1")
endif()

# Data-parallel training (label mpi), only in a build with -DROTARY_MPI=ON
# (`make test-mpi`).
if(ROTARY_MPI)
  include(tests/mpi.cmake)
endif()

# ctest -j2 runs two tests, each with two OpenMP threads, on two cores: with
# OpenMP's default busy-waiting, the waiting threads take the cores from the
# working ones and a test can run 100 times slower. Tests are not timed, so
# waiting threads sleep instead.
get_property(all_tests DIRECTORY PROPERTY TESTS)
set_property(TEST ${all_tests} APPEND PROPERTY ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")
