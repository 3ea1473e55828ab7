#!/usr/bin/env bash
# The GPU measurements, as named steps that each have their own time limit (a slow step is cut,
# and says so, without losing the others; every benchmark saves its JSON as it goes).
#
#   bash benchmarks/gpu_session.sh OUTDIR STEP [STEP ...]
#
# Wheels first: benchmarks/gpu_wheels.sh (here), installed there as it says.
# Steps: kernels (fused projector vs XLA), hashgrid (hash grid + torch-ngp peer), hashgrid_sweep
# (every SWEEP schedule of the Pallas hash grid in float32, then both dtypes with the fastest),
# peers (DRR peers in one process: nanodrr, DiffDRR, mbirjax, ASTRA when ASTRA_SITE is set), profile
# (a NAF step beside each of its parts: encoding, MLP, marcher, Adam), render,
# baselines (FDK/SART/CGLS + mbirjax: 128³/50 views every variant, then the fused-kernel variants
# at 256³ and at 25 views), memory (peak memory of each baseline and of the quality scores, each
# in a fresh process), naf (NAF speed variants:
# occupancy grid, mixed precision, Pallas hash grid), register (100 trials), sweep (INR variants
# at k = 4), mri (the interpolation protocol at k = 4, 2, 6), scaling (every GPU).
# Single-GPU benchmarks run on GPU 0 (CUDA_VISIBLE_DEVICES=0).
set -u
out=${1:?output folder}
shift
mkdir -p "$out"
one() { CUDA_VISIBLE_DEVICES=0 "$@"; }
nvidia-smi -L
python3 -c "import jax; print('jax', jax.__version__, jax.devices())"
for s in "$@"; do
  echo "== $(date +%T) $s"
  case $s in
    kernels) one timeout 240 python3 -m benchmarks.projector --kernels --no-tune --out-dir "$out" ;;
    hashgrid_sweep) one timeout 480 python3 benchmarks/hashgrid.py --impls level_major pallas --backwards segment_sum \
                --dtypes float32 bfloat16 --pallas-sweep --repeats 5 --deadline-s 420 --out-dir "$out" ;;
    peers)
      if [ -d .whl_astra ] && [ -z "${ASTRA_SITE:-}" ]; then  # ASTRA apart from the main site (gpu_wheels.sh)
        python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/astra_site .whl_astra/*.whl \
          && bash benchmarks/peers/astra_stub/build.sh /tmp/astra_site && export ASTRA_SITE=/tmp/astra_site
      fi
      one timeout 300 python3 -m benchmarks.projector_peers --budget-s 240 --out-dir "$out" ;;
    hashgrid) one timeout 300 python3 benchmarks/hashgrid.py --impls level_major pallas --backwards segment_sum \
                --dtypes float32 bfloat16 --peer --repeats 5 --deadline-s 90 --out-dir "$out" ;;
    render) one timeout 60 python3 -m benchmarks.render --out-dir "$out" ;;
    profile) one timeout 200 python3 benchmarks/naf_profile.py --out-dir "$out" ;;
    baselines)
      one timeout 200 python3 benchmarks/baselines.py --sizes 128 --views 50 --repeats 2 --out-dir "$out"
      fast="sart_pallas_siddon sart_pallas_siddon_running sart_voxel_pallas_siddon sart_voxel_pallas_siddon_running cgls_pallas_siddon"
      mkdir -p "$out/b256" "$out/b128"
      one timeout 200 python3 benchmarks/baselines.py --sizes 256 --views 50 25 --repeats 2 --variants $fast --out-dir "$out/b256"
      one timeout 120 python3 benchmarks/baselines.py --sizes 128 --views 25 --repeats 2 --variants $fast --out-dir "$out/b128" ;;
    memory) one timeout 300 python3 benchmarks/baselines.py --memory --sizes 256 128 --views 50 25 --iters 10 \
              --variants sart_pallas_siddon sart_voxel_pallas_siddon cgls_pallas_siddon --out-dir "$out" ;;
    naf) one timeout 170 python3 -m benchmarks.reconstruct --out-dir "$out" \
           --cases naf128_50_s64,naf128_50_s64_occ,naf128_50_mixed,naf128_50_pallas ;;
    register) one timeout 260 python3 benchmarks/register.py --nanodrr-every 25 --budget-s 190 --out-dir "$out" ;;
    sweep) one timeout 230 python3 benchmarks/interpolate.py --sweep ${SWEEP:-} --budget-s 200 --out-dir "$out" ;;
    mri) one timeout 280 python3 benchmarks/interpolate.py --k 4 2 6 --budget-s 250 --out-dir "$out" ;;
    scaling)
      timeout 90 python3 benchmarks/scaling.py --skip volume --repeats 3 --out-dir "$out"
      mkdir -p "$out/volume"
      timeout 50 python3 benchmarks/scaling.py --skip weak strong cohort --volume-sizes 256 512 1024 --views 360 \
          --out-dir "$out/volume" ;;
    *) echo "unknown step $s" ;;
  esac
done
echo "== $(date +%T) done"
