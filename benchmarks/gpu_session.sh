#!/usr/bin/env bash
# The GPU measurements of one session, in two parts that each fit a 10-minute call.
#
#   bash benchmarks/gpu_session.sh part1 OUTDIR   # kernels, render, baselines, 2-GPU scaling
#   bash benchmarks/gpu_session.sh part2 OUTDIR   # registration (100 trials), MRI interpolation
#
# Every benchmark writes its JSON (device, versions, date) into OUTDIR; each step has its own
# time limit, so a slow step is cut (and says so) without losing the others. Single-GPU
# benchmarks run on GPU 0 (CUDA_VISIBLE_DEVICES=0); the scaling runs use every GPU.
set -u
part=${1:?part1|part2}
out=${2:?output folder}
mkdir -p "$out"
one() { CUDA_VISIBLE_DEVICES=0 "$@"; }
step() { echo "== $(date +%T) $*"; }

nvidia-smi -L
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
if [ "$part" = part1 ]; then
  step projector kernels
  one timeout 150 python3 -m benchmarks.projector --kernels --no-tune --out-dir "$out"
  step hash grid
  one timeout 110 python3 benchmarks/hashgrid.py --impls level_major pallas --backwards segment_sum \
      --dtypes float32 bfloat16 --position-grad --peer --repeats 5 --deadline-s 95 --out-dir "$out"
  step render
  one timeout 60 python3 -m benchmarks.render --out-dir "$out"
  step baselines
  one timeout 100 python3 benchmarks/baselines.py --sizes 128 --views 50 --out-dir "$out"
  step scaling
  timeout 90 python3 benchmarks/scaling.py --skip volume --repeats 3 --out-dir "$out"
  mkdir -p "$out/volume"
  timeout 50 python3 benchmarks/scaling.py --skip weak strong cohort --volume-sizes 256 512 1024 --views 360 \
      --out-dir "$out/volume"
elif [ "$part" = part2 ]; then
  step registration
  one timeout 260 python3 benchmarks/register.py --nanodrr-every 25 --budget-s 190 --out-dir "$out"
  step interpolation
  one timeout 150 python3 benchmarks/interpolate.py --k 4 --budget-s 100 --out-dir "$out"
fi
step done
