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

# The kernels' own source run on the CPU by the emulation in tests/cuda/emu
# (cuda_emu.h): it needs the toolkit's headers but no GPU, so it runs in
# every CUDA build, once under ASan and UBSan and once under ThreadSanitizer
# (--quick: fewer shapes; races do not depend on them).
if(ROTARY_CUDA)
  enable_language(CXX)
  find_package(Threads REQUIRED)
  foreach(emu mma decode layer)
    foreach(t test_${emu}_emu test_${emu}_emu_tsan)
      add_executable(${t} tests/cuda/emu/test_${emu}_emu.cc)
      set_target_properties(${t} PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
      target_include_directories(${t} PRIVATE src include ${CUDAToolkit_INCLUDE_DIRS})
      target_link_libraries(${t} PRIVATE Threads::Threads)
      # nvcc does not exploit strict aliasing, on which the kernels' bit
      # casts rely, and knows the unroll pragmas g++ does not.
      target_compile_options(${t} PRIVATE -O2 -g -Wall -Wextra -Wno-unknown-pragmas
        -fno-strict-aliasing $<$<BOOL:${ROTARY_WERROR}>:-Werror>)
    endforeach()
    target_compile_options(test_${emu}_emu PRIVATE -fsanitize=address,undefined
      -fno-sanitize-recover=all)
    target_link_options(test_${emu}_emu PRIVATE -fsanitize=address,undefined)
    target_compile_options(test_${emu}_emu_tsan PRIVATE -fsanitize=thread)
    target_link_options(test_${emu}_emu_tsan PRIVATE -fsanitize=thread)
    add_test(NAME test_${emu}_emu COMMAND test_${emu}_emu)
    add_test(NAME test_${emu}_emu_tsan COMMAND test_${emu}_emu_tsan --quick)
    set_tests_properties(test_${emu}_emu test_${emu}_emu_tsan PROPERTIES LABELS emu)
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
