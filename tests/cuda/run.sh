#!/bin/bash
# tests/cuda/run.sh: everything the CUDA backend needs a GPU for, in one run
# (docs/performance.md): build with -DROTARY_CUDA=ON, run the kernel and
# model comparison tests against the CPU, then the training benchmark beside
# PyTorch (torch.compile, SDPA flash attention, bf16 autocast, fused AdamW),
# decoding against the memory-bandwidth bound, the kernel test again under
# compute-sanitizer's memcheck, and print a short table last; a per-kernel
# profile of one training step (Nsight Compute) on the way. The model test
# and the training benchmark run again with the mma.sync attention kernels
# (ROTARY_CUDA_ATTN=mma, flash_mma.cu), and a third time with their
# one-kernel backward (ROTARY_CUDA_ATTN=mma-atomic). About 3-4 minutes
# on an H100 with 16 cores, the build included.
#
# usage: tests/cuda/run.sh            (from anywhere; JOBS, BUILD, NVCC, PYTHON
#                                      override the defaults below)
#        STEPS="test_cuda_kernels cuda_train_mma" tests/cuda/run.sh
#                                     (only those steps, by their names in the
#                                      table: a rerun after a fix, on a machine
#                                      still warm, costs less device time)
# With the device tool, from the repository root here:
#   tests/cuda/deps.sh        (once: the Debian packages the GPU image lacks)
#   run(command="tests/cuda/run.sh", carry=["tests/cuda/deps"], timeout_s=600)
# Results (logs and the table) are written to $RESULTS (default
# $BUILD/gpu-results); when OUT is set (the device tool), they are also packed
# into $OUT/gpu-results.tgz after every step, since the tool brings back at
# most 8 files and nothing when the whole command is killed.
set -uo pipefail
cd "$(dirname "$0")/../.."
JOBS=${JOBS:-16}
BUILD=${BUILD:-build-gpu}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-$BUILD/gpu-results}
mkdir -p "$RESULTS"
declare -A status detail
t_start=$(date +%s)

note() { printf '%s\n' "$*" | tee -a "$RESULTS/run.log"; }
pack() { [ -z "${OUT:-}" ] || tar -czf "$OUT/gpu-results.tgz" -C "$RESULTS" . 2>/dev/null; }
elapsed() { echo $(($(date +%s) - t_start)); }

# What the build needs, said up front rather than as a CMake error. The GPU
# machine's image has nvcc and CMake but not OpenBLAS, cJSON or PCRE2: their
# Debian packages, fetched beforehand by tests/cuda/deps.sh and carried in
# tests/cuda/deps/, are unpacked under $BUILD/deps (nothing is installed).
cmake_extra=()
have_headers() {
  for h in cblas.h cjson/cJSON.h pcre2.h; do
    [ -n "$(find /usr/include /usr/local/include -path "*$h" 2>/dev/null | head -1)" ] || return 1
  done
}
if ! have_headers && ls tests/cuda/deps/*.deb >/dev/null 2>&1; then
  deps=$PWD/$BUILD/deps
  mkdir -p "$deps"
  for f in tests/cuda/deps/*.deb; do
    if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$f" "$deps" || exit 2
    else src=$PWD/$f; (cd "$deps" && ar x "$src" data.tar.xz && tar -xJf data.tar.xz && rm data.tar.xz) || exit 2
    fi
  done
  d=$deps/usr; a=x86_64-linux-gnu
  cmake_extra=(-DCBLAS_INCLUDE_DIR=$d/include/$a/openblas-pthread
    -DOPENBLAS_OPENMP=$d/lib/$a/openblas-openmp/libopenblas.so.0 -DCJSON_INCLUDE_DIR=$d/include
    -DCJSON_LIBRARY=$d/lib/$a/libcjson.so -DPCRE2_INCLUDE_DIR=$d/include
    -DPCRE2_LIBRARY=$d/lib/$a/libpcre2-8.so)
  export LD_LIBRARY_PATH=$d/lib/$a/openblas-openmp:$d/lib/$a${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  note "run.sh: using the carried packages in tests/cuda/deps (unpacked in $deps)"
elif ! have_headers; then
  note "run.sh: cannot build: OpenBLAS, cJSON or PCRE2 headers missing; run tests/cuda/deps.sh" \
    "on a Debian machine and carry tests/cuda/deps, or scripts/install-deps.sh here"
  exit 2
fi
missing=""
command -v cmake >/dev/null || missing+=" cmake"
[ -x "$NVCC" ] || missing+=" nvcc($NVCC)"
if [ -n "$missing" ]; then
  note "run.sh: cannot build: missing$missing"
  exit 2
fi
note "run.sh: $(nvidia-smi -L 2>/dev/null | head -1)"
# With MPI where the machine has it (the lent ones have not, so far):
# training data-parallel on 2 ranks sharing the GPU (mpi_cuda below; through
# host memory, since NCCL needs a GPU a rank).
mpi=OFF
command -v mpicc >/dev/null && command -v mpirun >/dev/null && mpi=ON

note "== build ($BUILD, -j$JOBS) [$(elapsed)s]"
# No -Werror here: another compiler may warn where CI's does not (CI builds
# with -Werror).
if ! cmake -S . -B "$BUILD" -DROTARY_CUDA=ON -DROTARY_MPI=$mpi -DCMAKE_CUDA_COMPILER="$NVCC" \
     "${cmake_extra[@]}" >"$RESULTS/cmake.log" 2>&1 ||
   ! cmake --build "$BUILD" -j "$JOBS" --target test_cuda_kernels test_cuda_model cuda_train cuda_attention \
     cuda_decode rotary_cli >"$RESULTS/build.log" 2>&1; then
  tail -n 30 "$RESULTS/cmake.log" "$RESULTS/build.log"
  note "run.sh: build failed (logs in $RESULTS)"
  pack
  exit 1
fi

# name, time limit (s), command...: status PASS/FAIL/SKIP/TIMEOUT and the
# last summary line of the output.
run() {
  local name=$1 limit=$2; shift 2
  if [ -n "${STEPS:-}" ] && [[ " $STEPS " != *" $name "* ]]; then
    status[$name]=SKIP detail[$name]="not in STEPS"
    return
  fi
  note "== $name [$(elapsed)s]"
  timeout "$limit" "$@" >"$RESULTS/$name.log" 2>&1
  local rc=$?
  cat "$RESULTS/$name.log"
  case $rc in
    0) status[$name]=PASS ;; 77) status[$name]=SKIP ;; 124) status[$name]=TIMEOUT ;;
    *) status[$name]="FAIL($rc)" ;;
  esac
  pack
}
# detail[name]: the last line of its log that matches the pattern (with
# none, the last line), unless the step was left out.
summarize() {
  [ "${detail[$1]:-}" = "not in STEPS" ] && return
  if [ -n "${2:-}" ]; then detail[$1]=$(grep -E "$2" "$RESULTS/$1.log" | tail -1)
  else detail[$1]=$(tail -n 1 "$RESULTS/$1.log"); fi
}

run test_cuda_kernels 60 "$BUILD/test_cuda_kernels"
summarize test_cuda_kernels "passed|FAILED"
run test_cuda_model 90 bash -c "cd '$BUILD' && ./test_cuda_model"
summarize test_cuda_model "passed|FAILED"
# the whole model again with the mma.sync attention kernels (flash_mma.cu)
run test_cuda_model_mma 90 bash -c "cd '$BUILD' && ROTARY_CUDA_ATTN=mma ./test_cuda_model"
summarize test_cuda_model_mma "passed|FAILED"
run test_cuda_model_mma_atomic 90 bash -c "cd '$BUILD' && ROTARY_CUDA_ATTN=mma-atomic ./test_cuda_model"
summarize test_cuda_model_mma_atomic "passed|FAILED"
run cli_device 120 bash tests/cuda/cli_device.sh "$BUILD/rotary" "$PWD" cuda
summarize cli_device
# 2 ranks x 2 sequences against 1 x 4, both on this GPU: within 1e-3, not
# the emulation's 1e-5, since cuBLAS may sum a GEMM of another shape in
# another order and a bf16 weight copy then round the other way; the
# mistakes the test is for are far above either (tests/cuda/mpi_cuda.sh).
if [ $mpi = ON ]; then
  run mpi_cuda 120 env TOL=1e-3 OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none \
    OMPI_MCA_plm_rsh_agent= bash tests/cuda/mpi_cuda.sh "$BUILD/rotary" "$PWD" "$(command -v mpirun)"
  summarize mpi_cuda
else
  status[mpi_cuda]=SKIP detail[mpi_cuda]="no MPI on this machine"
fi
run cuda_train 90 "$BUILD/bench/cuda_train"
# the same with the mma.sync attention kernels (flash_mma.cu, not yet the default),
# and with their one-kernel backward (dq summed atomically)
run cuda_train_mma 90 env ROTARY_CUDA_ATTN=mma "$BUILD/bench/cuda_train"
run cuda_train_mma_atomic 90 env ROTARY_CUDA_ATTN=mma-atomic "$BUILD/bench/cuda_train"
# T5's bias instead of RoPE (the WMMA kernels, with the table's gradient)
run cuda_train_t5 90 "$BUILD/bench/cuda_train" --pos t5
run cuda_attention 60 "$BUILD/bench/cuda_attention"
run torch_attention_gpu 60 "$PYTHON" bench/torch_attention_gpu.py
run cuda_decode 60 "$BUILD/bench/cuda_decode"
run torch_train_gpu 180 "$PYTHON" bench/torch_train_gpu.py
# Where the time of a training step goes, kernel by kernel (Nsight Compute:
# time and the bytes each kernel moves to and from memory, so GB/s against
# the memory's bound; clocks left alone), on a 2-layer model of the
# benchmark's width and context: informational, so its status does not
# decide the run's. With the mma.sync attention kernels, the likely default
# once they pass (PROFILE_ATTN=wmma for the current one).
ncu=$(command -v ncu || echo "$(dirname "$NVCC")/ncu")
if [ -x "$ncu" ]; then
  run profile 120 env ROTARY_CUDA_ATTN="${PROFILE_ATTN:-mma}" bash -c "'$ncu' --clock-control none --metrics gpu__time_duration.sum,dram__bytes.sum --csv \
    --page raw --log-file '$RESULTS/ncu.csv' '$BUILD/bench/cuda_train' --layers 2 --steps 1 \
    --warmup-steps 0 >/dev/null && '$PYTHON' tests/cuda/kernel_times.py '$RESULTS/ncu.csv' 20"
else
  status[profile]=SKIP detail[profile]="no ncu"
fi
# Out-of-bounds and misaligned accesses the comparisons could miss, last
# because it is the slowest (memcheck) and the table does not depend on it.
sanitizer=$(command -v compute-sanitizer || echo "$(dirname "$NVCC")/../compute-sanitizer/compute-sanitizer")
if [ -x "$sanitizer" ]; then
  run memcheck 120 "$sanitizer" --tool memcheck --error-exitcode 1 "$BUILD/test_cuda_kernels"
  summarize memcheck "ERROR SUMMARY"
else
  status[memcheck]=SKIP detail[memcheck]="no compute-sanitizer"
fi

val() { grep -m1 "^$2=" "$RESULTS/$1.log" 2>/dev/null | cut -d= -f2; }
{
  echo
  echo "== results ($(val cuda_train device), $(elapsed)s in all)"
  printf '%-28s %s\n' "check" "result"
  for t in test_cuda_kernels test_cuda_model test_cuda_model_mma test_cuda_model_mma_atomic \
           cli_device mpi_cuda cuda_train \
           cuda_train_mma cuda_train_mma_atomic cuda_train_t5 cuda_attention torch_attention_gpu cuda_decode torch_train_gpu profile \
           memcheck; do
    printf '%-28s %s %s\n' "$t" "${status[$t]}" "${detail[$t]:-}"
  done
  echo
  echo "training, GPT-2-small shape with RoPE (12 x 768, ctx 1024, vocab 50304, batch 16):"
  printf '%-22s %12s %10s %8s %8s %8s %8s\n' "" "tokens/s" "ms/step" "MFU" "fwd ms" "bwd ms" \
    "opt ms"
  for r in "cuda_train:rotary (cuda)" "cuda_train_mma:rotary, mma.sync attn" \
           "cuda_train_mma_atomic:rotary, mma, atomic dq" "cuda_train_t5:rotary, T5 bias (wmma)"; do
    b=${r%%:*}
    printf '%-22s %12s %10s %8s %8s %8s %8s\n' "${r#*:}" "$(val $b tokens_per_s)" \
      "$(val $b ms_per_step)" "$(val $b mfu)" "$(val $b forward_ms)" "$(val $b backward_ms)" \
      "$(val $b optimizer_ms)"
  done
  printf '%-22s %12s %10s %8s\n' "pytorch $(val torch_train_gpu torch)" \
    "$(val torch_train_gpu tokens_per_s)" "$(val torch_train_gpu ms_per_step)" \
    "$(val torch_train_gpu mfu)"
  echo
  echo "causal attention alone, B 16 x T 1024, 12 heads of 64:"
  printf '%-22s %10s %10s %12s %12s\n' "" "fwd ms" "bwd ms" "fwd TFLOP/s" "bwd TFLOP/s"
  for a in cuda_attention torch_attention_gpu; do
    printf '%-22s %10s %10s %12s %12s\n' "$([ $a = cuda_attention ] && echo rotary || echo 'pytorch sdpa (bf16)')" \
      "$(val $a fwd_ms)" "$(val $a bwd_ms)" "$(val $a fwd_tflops)" "$(val $a bwd_tflops)"
  done
  printf '%-22s %10s %10s %12s %12s\n' "rotary mma.sync" "$(val cuda_attention fwd_mma_ms)" \
    "$(val cuda_attention bwd_mma_ms)" "$(val cuda_attention fwd_mma_tflops)" \
    "$(val cuda_attention bwd_mma_tflops)"
  printf '%-22s %10s %10s %12s %12s\n' "  backward, atomic dq" "" \
    "$(val cuda_attention bwd_mma_atomic_ms)" "" "$(val cuda_attention bwd_mma_atomic_tflops)"
  echo "  mma.sync against WMMA (max difference / largest element): out $(val cuda_attention mma_vs_wmma_out)," \
    "dq $(val cuda_attention mma_vs_wmma_dq), dk $(val cuda_attention mma_vs_wmma_dk), dv $(val cuda_attention mma_vs_wmma_dv)"
  echo "  atomic dq against WMMA: dq $(val cuda_attention mma_atomic_vs_wmma_dq)," \
    "dk $(val cuda_attention mma_atomic_vs_wmma_dk), dv $(val cuda_attention mma_atomic_vs_wmma_dv)"
  echo
  echo "decode, llama2.c 110M shape (fp32 weights, KV cache, greedy):"
  echo "  $(val cuda_decode tok_s) tokens/s as a CUDA graph (graph: $(val cuda_decode graph))," \
    "$(val cuda_decode tok_s_launches) kernel by kernel ($(val cuda_decode graph_speedup)x);"
  echo "  $(val cuda_decode tok_s_fused) tokens/s with the fused linear layers" \
    "($(val cuda_decode fused_speedup)x the graph, $(val cuda_decode of_bound_fused) of the bound);"
  echo "  $(val cuda_decode tok_s_int8) tokens/s with int8 weights" \
    "($(val cuda_decode of_bound_int8) of their bound, $(val cuda_decode bound_tok_s_int8) tokens/s);"
  echo "  $(val cuda_decode tok_s_bf16) tokens/s with bf16 weights" \
    "($(val cuda_decode of_bound_bf16) of their bound, $(val cuda_decode bound_tok_s_bf16) tokens/s);"
  echo "  $(val cuda_decode floor_tok_s) tokens/s for the same step at head size 16 and hidden 128" \
    "(the launches' floor; bf16 at $(val cuda_decode bf16_of_floor) of it);"
  echo "  bound $(val cuda_decode bound_tok_s) tokens/s" \
    "($(val cuda_decode of_bound) of it) at $(val cuda_decode device_copy_gb_s) GB/s (device copy)"
} | tee "$RESULTS/table.txt"
pack
# Everything must pass; memcheck and mpi_cuda may be skipped where there is
# no sanitizer or MPI, and any step left out of STEPS.
for t in "${!status[@]}"; do
  [ "${status[$t]}" = PASS ] || [ "$t:${status[$t]}" = memcheck:SKIP ] || [ "$t" = profile ] ||
    [ "$t:${status[$t]}" = mpi_cuda:SKIP ] ||
    [ "${detail[$t]:-}" = "not in STEPS" ] || exit 1
done
