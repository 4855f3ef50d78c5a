# Replays of the fuzz harnesses (fuzz/NAME.c) without libFuzzer; included
# from tests/tests.cmake. Each harness is linked with tests/fuzz_replay.c
# into fuzz_replay_NAME, and the test fuzz_replay_NAME feeds it every crash
# input saved for it (tests/fuzz_regressions/NAME-*.bin: each a bug that was
# found and fixed) and its seed corpus (fuzz/corpus/NAME/). `make test` runs
# them again under AddressSanitizer and UBSan (label "reader"), which is
# what gives a replayed crash input its teeth. The fuzzing itself is
# fuzz/run.sh (clang, libFuzzer); docs/reliability.md explains both.
set(ROTARY_FUZZ_HARNESSES safetensors llama2c_model llama2c_tokenizer gguf gguf_tokenizer
  gguf_model tokenizer_json tokens run_config encode)
# The run directory's config.json reader is static in cli/train.c, which the
# run_config harness includes; the rest of what it calls is here.
set(ROTARY_FUZZ_EXTRA_run_config cli/args.c cli/common.c cli/corpus.c)

add_custom_target(fuzz_replay)
foreach(h ${ROTARY_FUZZ_HARNESSES})
  add_executable(fuzz_replay_${h} tests/fuzz_replay.c fuzz/${h}.c ${ROTARY_FUZZ_EXTRA_${h}})
  target_include_directories(fuzz_replay_${h} PRIVATE fuzz src cli ${CBLAS_INCLUDE_DIR}
    ${CJSON_INCLUDE_DIR})
  target_compile_definitions(fuzz_replay_${h} PRIVATE
    ROTARY_FUZZ_DATA_DIR="${CMAKE_SOURCE_DIR}/fuzz/data")
  target_link_libraries(fuzz_replay_${h} rotary)
  add_dependencies(fuzz_replay fuzz_replay_${h})
  add_test(NAME fuzz_replay_${h}
    COMMAND fuzz_replay_${h} -p ${h}- ${CMAKE_SOURCE_DIR}/tests/fuzz_regressions
      -a ${CMAKE_SOURCE_DIR}/fuzz/corpus/${h}
    WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
  set_tests_properties(fuzz_replay_${h} PROPERTIES LABELS "fuzz;reader"
    ENVIRONMENT "OMP_NUM_THREADS=1")
endforeach()
