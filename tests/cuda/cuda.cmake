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

# kernel_times.py (run.sh's profile table) on a sample of Nsight Compute's
# CSV: names shortened, calls summed, and two calls of 75.5 MB in 30 us each
# at 2517 GB/s.
if(ROTARY_CUDA)
  add_test(NAME kernel_times COMMAND ${TORCH_PYTHON} ${CMAKE_SOURCE_DIR}/tests/cuda/kernel_times.py
    ${CMAKE_SOURCE_DIR}/tests/cuda/kernel_times_sample.csv 5)
  set_tests_properties(kernel_times PROPERTIES PASS_REGULAR_EXPRESSION
    "norm_forward_kernel<__nv_bfloat16, 4> +2 +0.060 +42.9% +0.151 +2517")
endif()

# The kernels' own source run on the CPU by the emulation in tests/cuda/emu
# (cuda_emu.h, runtime.cc): it needs the toolkit's headers but no GPU, so it
# runs in every CUDA build. test_<x>_emu build kernel files with it, under
# ASan and UBSan, and again under ThreadSanitizer (--quick: fewer shapes;
# races do not depend on them). test_cuda_model_emu and test_cuda_kernels_emu
# are the GPU tests on librotary built with every kernel file and the device
# model (rotary_emu), under ASan and UBSan.
if(ROTARY_CUDA)
  enable_language(CXX)
  find_package(Threads REQUIRED)
  # nvcc does not exploit strict aliasing, on which the kernels' bit casts
  # rely, and knows the unroll pragmas g++ does not.
  set(EMU_CXX_FLAGS -O2 -g -Wall -Wextra -Wno-unknown-pragmas -fno-strict-aliasing
    $<$<BOOL:${ROTARY_WERROR}>:-Werror>)
  set(EMU_ASAN -fsanitize=address,undefined -fno-sanitize-recover=all)
  add_library(rotary_emu_runtime STATIC tests/cuda/emu/runtime.cc)
  set_target_properties(rotary_emu_runtime PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
  target_include_directories(rotary_emu_runtime PUBLIC tests/cuda/emu src include
    ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(rotary_emu_runtime PRIVATE ${EMU_CXX_FLAGS})
  target_link_libraries(rotary_emu_runtime PUBLIC Threads::Threads)
  # librotary with the emulated kernels: each .cu file built by g++ through
  # a one-line wrapper.
  set(emu_sources)
  foreach(f gemm layer attention decode flash_fwd flash_bwd flash_mma device)
    set(w ${CMAKE_BINARY_DIR}/emu/${f}_emu.cc)
    file(WRITE ${w}.in "#define ROTARY_CUDA_EMU 1\n#include \"cuda_emu.h\"\n"
      "#include \"${CMAKE_SOURCE_DIR}/src/cuda/${f}.cu\"\n")
    configure_file(${w}.in ${w} COPYONLY)
    list(APPEND emu_sources ${w})
  endforeach()
  foreach(emu flash decode layer)
    foreach(t test_${emu}_emu test_${emu}_emu_tsan)
      add_executable(${t} tests/cuda/emu/test_${emu}_emu.cc)
      if(emu STREQUAL flash) # the three kernel files, each in its own unit
        target_sources(${t} PRIVATE ${CMAKE_BINARY_DIR}/emu/flash_mma_emu.cc
          ${CMAKE_BINARY_DIR}/emu/flash_fwd_emu.cc ${CMAKE_BINARY_DIR}/emu/flash_bwd_emu.cc)
      endif()
      set_target_properties(${t} PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
      target_compile_options(${t} PRIVATE ${EMU_CXX_FLAGS})
      target_link_libraries(${t} PRIVATE rotary_emu_runtime)
    endforeach()
    target_compile_options(test_${emu}_emu PRIVATE ${EMU_ASAN})
    target_link_options(test_${emu}_emu PRIVATE ${EMU_ASAN})
    target_compile_options(test_${emu}_emu_tsan PRIVATE -fsanitize=thread)
    target_link_options(test_${emu}_emu_tsan PRIVATE -fsanitize=thread)
    add_test(NAME test_${emu}_emu COMMAND test_${emu}_emu)
    add_test(NAME test_${emu}_emu_tsan COMMAND test_${emu}_emu_tsan --quick)
    set_tests_properties(test_${emu}_emu test_${emu}_emu_tsan PROPERTIES LABELS emu)
  endforeach()

  add_library(rotary_emu STATIC ${ROTARY_SOURCES} src/cuda/cuda_model.c src/cuda/cuda_train.c
    src/cuda/comm.c ${emu_sources})
  set_target_properties(rotary_emu PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
  target_include_directories(rotary_emu PUBLIC include PRIVATE src ${CJSON_INCLUDE_DIR}
    ${CBLAS_INCLUDE_DIR} ${PCRE2_INCLUDE_DIR} ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(rotary_emu PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:${EMU_CXX_FLAGS}>"
    ${EMU_ASAN})
  target_link_libraries(rotary_emu PUBLIC OpenMP::OpenMP_C ${BLAS_LIBRARIES} ${CJSON_LIBRARY}
    ${PCRE2_LIBRARY} m rotary_emu_runtime)
  foreach(t test_cuda_model test_cuda_kernels)
    add_executable(${t}_emu tests/cuda/${t}.c)
    target_include_directories(${t}_emu PRIVATE src ${CUDAToolkit_INCLUDE_DIRS})
    target_compile_options(${t}_emu PRIVATE ${EMU_ASAN})
    target_link_options(${t}_emu PRIVATE ${EMU_ASAN})
    target_link_libraries(${t}_emu rotary_emu)
  endforeach()
  add_test(NAME test_cuda_model_emu COMMAND test_cuda_model_emu --quick
    WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
  # The GPU's kernel test, every kernel against the CPU's, on the emulation.
  add_test(NAME test_cuda_kernels_emu COMMAND test_cuda_kernels_emu --quick)
  set_tests_properties(test_cuda_kernels_emu PROPERTIES LABELS emu)
  set_tests_properties(test_cuda_model_emu PROPERTIES LABELS emu ENVIRONMENT ROTARY_CUDA_ATTN=mma)
  # The command line on the emulated GPU: train (cuda_train.c, its
  # checkpoints), eval and generate with --device cuda, on the default
  # (WMMA) attention, where test_cuda_model_emu takes the mma.sync one.
  get_target_property(cli_sources rotary_cli SOURCES)
  add_executable(rotary_cli_emu ${cli_sources})
  target_include_directories(rotary_cli_emu PRIVATE src ${CBLAS_INCLUDE_DIR} ${CJSON_INCLUDE_DIR})
  target_compile_options(rotary_cli_emu PRIVATE ${EMU_ASAN})
  target_link_options(rotary_cli_emu PRIVATE ${EMU_ASAN})
  target_link_libraries(rotary_cli_emu rotary_emu)
  add_test(NAME cli_device_emu
    COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cuda/cli_device.sh $<TARGET_FILE:rotary_cli_emu>
      ${CMAKE_SOURCE_DIR} emu
    WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
  set_tests_properties(cli_device_emu PROPERTIES LABELS emu)
  # Data parallelism on GPUs (mpirun, a GPU a rank) where MPI is built in
  # too (make test-cuda-build turns it on where mpirun is installed): 2 ranks
  # of the emulated GPU against 1 with the whole batch. Label mpi_cuda, not
  # mpi: the CPU's MPI tests run in make test-mpi's build.
  # The emulation's NCCL (runtime.cc) is MPI on the emulated device
  # memory, which is host memory: comm.c's NCCL path runs on it.
  if(ROTARY_MPI)
    target_compile_definitions(rotary_emu PRIVATE ROTARY_MPI=1)
    target_link_libraries(rotary_emu PUBLIC MPI::MPI_C)
    target_compile_definitions(rotary_emu_runtime PRIVATE ROTARY_MPI=1)
    target_link_libraries(rotary_emu_runtime PUBLIC MPI::MPI_C)
    # comm.c finds the emulation's NCCL in the program (dlsym).
    set_target_properties(rotary_cli_emu PROPERTIES ENABLE_EXPORTS ON)
    if(ROTARY_NCCL)
      set(nccl_path nccl)
    else()
      set(nccl_path host)
    endif()
    add_test(NAME mpi_cuda_emu
      COMMAND bash ${CMAKE_SOURCE_DIR}/tests/cuda/mpi_cuda.sh $<TARGET_FILE:rotary_cli_emu>
        ${CMAKE_SOURCE_DIR} ${MPIRUN} ${nccl_path}
      WORKING_DIRECTORY ${CMAKE_BINARY_DIR})
    # No leak check: Open MPI keeps allocations past MPI_Finalize.
    set_tests_properties(mpi_cuda_emu PROPERTIES LABELS "emu;mpi_cuda" PROCESSORS 2
      ENVIRONMENT "${ROTARY_MPI_ENV};ASAN_OPTIONS=detect_leaks=0")
  endif()
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
