#!/usr/bin/env bash
# The H100 figures of bench/results/h100_*.txt: one call of the `device` tool, e.g.
#   run(command="bash bench/h100.sh", carry=[".gpudata", ".whl"])
# .gpudata/ holds copies of ../shared/data/3ddfa_v2/{FaceBoxesProd.pth,mb05_120x120.pth,
# param_mean_std_62d_120x120.pkl,reference_mb05.npz} and ../shared/data/real/voxceleb/
# (../shared does not travel); .whl/ the cp312 PyAV wheel (the GPU image has no PyAV).
# Each step has its own time limit so that one slow step cannot take the others' output.
set -u
OUT=${OUT:-/tmp/h100out}
mkdir -p "$OUT"
export VOX3D_DATA=$PWD/.gpudata PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  echo "=== $name ($(date +%T))"
  timeout "$secs" "$@" > "$OUT/$name.txt" 2> "$OUT/$name.err"
  echo "rc=$? ($(date +%T))"; tail -n 40 "$OUT/$name.txt"
}
what=${1:-all}
if [ "$what" = all ] || [ "$what" = fit ]; then
  step fit_stage 120 python3 bench/fit_stage.py --device cuda --precisions fp32,bf16,fp16
  ngpu=$(nvidia-smi -L | wc -l)
  step node 300 python3 bench/node.py --device cuda --copies 150 --workers 14 --fit-threads 8 --multi-gpu "$ngpu"
fi
if [ "$what" = all ]; then
  step fit 270 python3 bench/fit.py --device cuda --compile --profile
fi
