# Tests of issue 5 (llama2.c models, generation); included from tests/tests.cmake.
add_executable(llama2c_greedy tests/llama2c_greedy.c)
target_link_libraries(llama2c_greedy rotary)

# Greedy ids of the two real llama2.c files against a PyTorch float64
# implementation of the format.
add_test(NAME llama2c_torch
  COMMAND ${TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/torch/llama2c_ref.py $<TARGET_FILE:llama2c_greedy>
          ${ROTARY_DATA_DIR}/aidreams260K.bin ${ROTARY_DATA_DIR}/stories260K.bin
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
set_tests_properties(llama2c_torch PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")
# The same through rotary_decoder_bf16, against the reference on bf16-rounded matrices.
add_test(NAME llama2c_torch_bf16
  COMMAND ${TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/torch/llama2c_ref.py --bf16
          $<TARGET_FILE:llama2c_greedy>
          ${ROTARY_DATA_DIR}/aidreams260K.bin ${ROTARY_DATA_DIR}/stories260K.bin
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
set_tests_properties(llama2c_torch_bf16 PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=2")

add_executable(test_llama2c tests/test_llama2c.c)
target_link_libraries(test_llama2c rotary)
add_test(NAME test_llama2c COMMAND test_llama2c WORKING_DIRECTORY ${CMAKE_BINARY_DIR})

# Our models through GGUF and back: both pairings, scalings, refusals.
add_executable(test_export tests/test_export.c)
target_link_libraries(test_export rotary)
add_test(NAME test_export COMMAND test_export WORKING_DIRECTORY ${CMAKE_BINARY_DIR})

# A tiny GGUF model with the chat templates' special tokens (for chat).
add_executable(chat_vocab tests/chat_vocab.c)
target_include_directories(chat_vocab PRIVATE src)
target_link_libraries(chat_vocab rotary)

# generate, chat and export through the command; ASan runs it too (make test).
add_test(NAME cli_generate
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cli_generate.sh $<TARGET_FILE:rotary_cli>
          $<TARGET_FILE:llama2c_greedy> $<TARGET_FILE:gguf_list> ${CMAKE_SOURCE_DIR} ${ROTARY_DATA_DIR}
          $<TARGET_FILE:chat_vocab>
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
