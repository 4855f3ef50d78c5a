#!/bin/bash
# Install the Debian packages rotary needs to build, test and benchmark, and
# the two corpora (bible-kjv: English, fortunes-zh: Chinese); gnuplot-nox
# draws `rotary rope decay --plot`; python3-regex is the outside oracle of
# the Llama 3 pre-tokenizer test (tests/pretok_ref.py); clang,
# libclang-rt-14-dev (libFuzzer and the sanitizer runtimes) and libomp-14-dev
# (OpenMP for clang) build the fuzz harnesses (fuzz/run.sh); libopenmpi-dev
# and openmpi-bin (mpirun) build and test data-parallel training (make
# test-mpi, docs/distributed.md).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  build-essential cmake libopenblas-dev libopenblas0-openmp libcjson-dev libpcre2-dev \
  python3 python3-torch python3-numpy python3-regex bible-kjv fortunes-zh gnuplot-nox \
  clang libclang-rt-14-dev libomp-14-dev libopenmpi-dev openmpi-bin >/dev/null

# The GGUF cross-check (tests/gguf_npm) parses files with @huggingface/gguf,
# pinned by tests/gguf_npm/package-lock.json; Debian's nodejs and npm only if
# node is missing (the package needs node >= 20).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
npm ci --prefix "$(dirname "$0")/../tests/gguf_npm" --no-audit --no-fund --loglevel=error
