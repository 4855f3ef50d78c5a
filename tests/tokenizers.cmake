# Tests of issue 5 (tokenizers); included from tests/tests.cmake.
# test_vocab: llama2.c and GGUF tokenizers, llama.cpp's test vectors, our
# tokenizers through GGUF, bad files. Reads ../shared/data (ROTARY_DATA_DIR).
add_executable(test_vocab tests/test_vocab.c)
target_include_directories(test_vocab PRIVATE src)
target_link_libraries(test_vocab rotary)
add_test(NAME test_vocab COMMAND test_vocab WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
set_property(TEST test_vocab APPEND PROPERTY ENVIRONMENT "ROTARY_DATA_DIR=${ROTARY_DATA_DIR}")
