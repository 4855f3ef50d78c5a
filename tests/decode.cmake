# Tests of issue 5 (decode); included from tests/tests.cmake.
# Kernels (f16/bf16, float32 and Q8_0 matvec) and the decoder with and
# without rotary_decoder_quantize.
add_executable(test_decode tests/test_decode.c)
target_include_directories(test_decode PRIVATE src)
target_link_libraries(test_decode rotary)
add_test(NAME test_decode COMMAND test_decode WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
# Passive waiting: on a machine shared with other jobs, spinning threads
# make each of the decoder's barriers wait for a time slice (4x slower).
set_tests_properties(test_decode PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
