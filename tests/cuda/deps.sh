#!/bin/bash
# tests/cuda/deps.sh: run HERE (a Debian machine with network), not on the
# GPU machine: download the Debian packages of the libraries rotary links
# (OpenBLAS, cJSON, PCRE2 and their runtime needs) into tests/cuda/deps/, for
# the GPU machine's image, which has nvcc, CMake and PyTorch but not these.
# tests/cuda/run.sh unpacks them there (dpkg -x, nothing installed) when the
# headers are missing. It also copies the small llama2.c checkpoints of
# ../shared/data that cli_device.sh decodes into tests/cuda/deps/data.
# Pass tests/cuda/deps in the device tool's `carry`;
# the folder is ignored by git (.git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")"
grep -qx '/tests/cuda/deps/' ../../.git/info/exclude 2>/dev/null ||
  echo '/tests/cuda/deps/' >> ../../.git/info/exclude
mkdir -p deps
cd deps
apt-get download libopenblas0-openmp libopenblas-pthread-dev libcjson1 libcjson-dev \
  libpcre2-8-0 libpcre2-dev libgfortran5 libquadmath0 libgomp1
# The small llama2.c checkpoints tests/cuda/cli_device.sh decodes on the GPU
# (the device tool copies the working tree, not ../shared).
data=../../../../shared/data
if [ -d "$data" ]; then
  mkdir -p data
  cp -f "$data"/aidreams260K.bin "$data"/aidreams_tok512.bin "$data"/stories260K.bin \
    "$data"/tok512.bin data/
fi
du -sh .
