# The GPU tests (tests/cuda/run.sh runs them on a GPU). Without a CUDA
# device they exit 77 and CTest reports them as skipped, not passed.
if(ROTARY_CUDA)
  foreach(t test_cuda_kernels test_cuda_model)
    add_executable(${t} tests/cuda/${t}.c)
    target_include_directories(${t} PRIVATE src)
    target_link_libraries(${t} rotary)
    add_test(NAME ${t} COMMAND ${t} WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
    set_tests_properties(${t} PROPERTIES SKIP_RETURN_CODE 77 LABELS cuda)
  endforeach()
endif()

# --device on the command line, in every build (cpu: "built without CUDA").
if(ROTARY_CUDA)
  set(ROTARY_BUILT_FOR cuda)
else()
  set(ROTARY_BUILT_FOR cpu)
endif()
add_test(NAME cli_device
  COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cuda/cli_device.sh $<TARGET_FILE:rotary_cli>
    ${CMAKE_SOURCE_DIR} ${ROTARY_BUILT_FOR}
  WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
