# The CUDA backend (option ROTARY_CUDA, docs/performance.md): kernels in
# src/cuda/*.cu compiled by nvcc for sm_90 (H100/H200) plus PTX for newer
# GPUs, the device model and training loop in src/cuda/*.c, all linked into
# librotary with cudart and cuBLAS. Without it, src/cuda/stub.c answers every
# device call with "built without CUDA".
if(ROTARY_CUDA)
  if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
    set(CMAKE_CUDA_ARCHITECTURES "90-real;90-virtual")
  endif()
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(CMAKE_CUDA_STANDARD 17)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  # rotary was created before CUDA was enabled: give it the architectures.
  set_target_properties(rotary PROPERTIES CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
  target_sources(rotary PRIVATE src/cuda/gemm.cu src/cuda/layer.cu src/cuda/attention.cu
    src/cuda/decode.cu src/cuda/flash_fwd.cu src/cuda/flash_mma.cu src/cuda/flash_bwd.cu
    src/cuda/device.cu src/cuda/cuda_model.c src/cuda/cuda_train.c src/cuda/comm.c)
  # Host-side warnings as for the C code; -Werror applies to them too.
  target_compile_options(rotary PRIVATE
    "$<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra;-lineinfo>"
    "$<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${ROTARY_WERROR}>>:-Werror=all-warnings>")
  # ptxas warns where a kernel spills registers to local memory, and -Werror
  # builds fail on it, in the files whose kernels were tuned to spill
  # nothing (a 255-register kernel spills after a one-register change).
  # attention.cu's fp32 kernels keep whole rows in registers and spill at
  # head sizes 64 and 128; decode.cu spills a few bytes at 40 registers.
  set_source_files_properties(src/cuda/flash_fwd.cu src/cuda/flash_bwd.cu src/cuda/flash_mma.cu
    src/cuda/layer.cu src/cuda/gemm.cu src/cuda/device.cu PROPERTIES COMPILE_OPTIONS
    "-Xptxas=--warn-on-spills$<$<BOOL:${ROTARY_WERROR}>:,--warning-as-error>")
  # Stream 0 is the calling thread's default stream, not the legacy one, in
  # every file that includes a CUDA header: a stream that can be captured
  # into a CUDA graph (the decoder, src/cuda/cuda_model.c).
  target_compile_definitions(rotary PUBLIC ROTARY_HAVE_CUDA=1 CUDA_API_PER_THREAD_DEFAULT_STREAM=1)
  target_link_libraries(rotary PUBLIC CUDA::cudart CUDA::cublas CUDA::cublasLt)
  # NCCL averages the gradients of data-parallel training on the GPUs
  # themselves (src/cuda/comm.c); MPI starts it, so only with ROTARY_MPI.
  # Its header where the toolkit has one; the library is opened at run time
  # (dlopen), only by a run that uses it. Without either, the gradients go
  # through host memory.
  if(ROTARY_MPI)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
    if(NCCL_INCLUDE_DIR)
      set(ROTARY_NCCL ON)
      set_source_files_properties(src/cuda/comm.c PROPERTIES COMPILE_DEFINITIONS ROTARY_NCCL=1)
      target_include_directories(rotary PRIVATE ${NCCL_INCLUDE_DIR})
      target_link_libraries(rotary PUBLIC ${CMAKE_DL_LIBS})
      message(STATUS "NCCL: ${NCCL_INCLUDE_DIR}/nccl.h (libnccl.so.2 opened at run time)")
    else()
      message(STATUS "NCCL: no nccl.h; data-parallel GPUs average through host memory")
    endif()
  endif()
else()
  target_sources(rotary PRIVATE src/cuda/stub.c)
endif()
