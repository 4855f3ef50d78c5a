# Convenience wrapper around CMake. `make test` is what CI runs.
BUILD ?= build
JOBS ?= 2

.PHONY: all train demo test test-cuda-build test-mpi sanitize tsan fuzz clean

all:
	cmake -S . -B $(BUILD) -DROTARY_WERROR=ON >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# The main job on its defaults: a small RoPE model on the English corpus.
train: all
	./$(BUILD)/rotary train --force

demo: all
	./$(BUILD)/rotary demo

# Every test. CI also runs `make sanitize`, `make tsan` and `make fuzz`.
test: all
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) test-cuda-build
	$(MAKE) test-mpi

# The CUDA backend (docs/performance.md) where nvcc is installed: build
# everything with -DROTARY_CUDA=ON and run the tests; those that need a GPU
# report "Skipped" without one (tests/cuda/run.sh runs them on a GPU). Where
# mpirun is installed, with MPI too, for training on several GPUs
# (mpi_cuda_emu); the CPU's MPI tests (label mpi) are test-mpi's.
NVCC ?= /usr/local/cuda/bin/nvcc
test-cuda-build:
	@if [ ! -x $(NVCC) ]; then echo "test-cuda-build: skipped: no nvcc at $(NVCC)"; exit 0; fi; \
	set -e; mpi=OFF; if command -v mpirun >/dev/null; then mpi=ON; fi; \
	cmake -S . -B $(BUILD)-cuda -DROTARY_WERROR=ON -DROTARY_CUDA=ON -DROTARY_MPI=$$mpi \
	  -DCMAKE_CUDA_COMPILER=$(NVCC) >/dev/null; \
	cmake --build $(BUILD)-cuda -j $(JOBS); \
	cd $(BUILD)-cuda && ctest --output-on-failure -j $(JOBS) -LE '^mpi$$'

# Data-parallel training over MPI (docs/distributed.md): a build with
# -DROTARY_MPI=ON and its tests labelled "mpi" (2 and 3 ranks under mpirun).
test-mpi:
	cmake -S . -B $(BUILD)-mpi -DROTARY_WERROR=ON -DROTARY_MPI=ON >/dev/null
	cmake --build $(BUILD)-mpi -j $(JOBS) --target rotary_cli test_dist
	cd $(BUILD)-mpi && ctest --output-on-failure -L mpi

# The whole suite again, built with AddressSanitizer and UBSan.
sanitize:
	cmake -S . -B $(BUILD)-asan -DROTARY_WERROR=ON -DROTARY_SANITIZE=ON >/dev/null
	cmake --build $(BUILD)-asan -j $(JOBS)
	cd $(BUILD)-asan && ctest --output-on-failure -j $(JOBS)

# The training tests (label tsan) under ThreadSanitizer, with clang, libomp
# and Archer; tsan_canary first proves that a planted race is caught.
tsan:
	CC=clang cmake -S . -B $(BUILD)-tsan -DROTARY_TSAN=ON >/dev/null
	cmake --build $(BUILD)-tsan -j $(JOBS) --target tsan_canary test_train test_model test_decode crash_kill rotary_cli
	cd $(BUILD)-tsan && ctest --output-on-failure -L tsan

# Every libFuzzer harness in fuzz/ for FUZZ_SECONDS each, under ASan and UBSan
# (clang); CI runs 30 s each. docs/reliability.md.
FUZZ_SECONDS ?= 60
fuzz:
	fuzz/run.sh $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(BUILD)-asan $(BUILD)-tsan $(BUILD)-cuda $(BUILD)-mpi build-fuzz
