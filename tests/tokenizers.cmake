# Tests of issue 5 (tokenizers); included from tests/tests.cmake.
# test_vocab: llama2.c and GGUF tokenizers, llama.cpp's test vectors, our
# tokenizers through GGUF, bad files. Reads ../shared/data (ROTARY_DATA_DIR).
add_executable(test_vocab tests/test_vocab.c)
target_include_directories(test_vocab PRIVATE src)
target_link_libraries(test_vocab rotary)
add_test(NAME test_vocab COMMAND test_vocab WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
set_property(TEST test_vocab APPEND PROPERTY ENVIRONMENT "ROTARY_DATA_DIR=${ROTARY_DATA_DIR}")

# The llama-bpe (Llama 3) pre-tokenizer against Python's regex module.
add_executable(pretok_check tests/pretok_check.c)
target_include_directories(pretok_check PRIVATE src)
target_link_libraries(pretok_check rotary)
add_test(NAME pretok_llama3
  COMMAND ${TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/pretok_ref.py $<TARGET_FILE:pretok_check>
          ${ROTARY_DATA_DIR})
