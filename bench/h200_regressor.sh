#!/usr/bin/env bash
# Retrain the ICT regressor on one H200 (16 cores) through the device tool, one stage per call
# (each call is limited to 10 minutes; every stage stops itself within 9.5):
#   run(command="bash bench/h200_regressor.sh render", carry=[".gpudata"], kind="nvidia-h200")
#   run(command="bash bench/h200_regressor.sh train",  carry=[".gpudata"])   # repeat until "finished"
#   run(command="bash bench/h200_regressor.sh eval",   carry=[".gpudata"])
# .gpudata/ (ignored; ../shared does not travel) is laid out like ../shared/data for
# VOX3D_DATA: ict-facekit/ICT-FaceKit.tar.xz (a subset: neutral mesh, identity000-039, the 10
# default expressions; same arrays as the full archive for n_id 40 / n_exp 10),
# 3ddfa_v2/FaceBoxesProd.pth, whl/ (cp312 wheels the GPU image lacks: matplotlib and its
# dependencies, tqdm, threadpoolctl).  No PyAV there, so frames take the JPEG round trip.
# The render cache lives in .regdata/ (ignored) and persists between calls on a warm machine;
# render and train resume where the previous call stopped.
set -u
OUT=${OUT:-/tmp/h200out}
mkdir -p "$OUT"
export VOX3D_DATA=$PWD/.gpudata VOX3D_CACHE=$PWD/.regdata/vox3d-cache PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
export MPLCONFIGDIR=/tmp/mpl OMP_NUM_THREADS=1
N=${N:-300000}            # training samples
NHELD=${NHELD:-2000}      # held-out samples (one person each)
STEPS=${STEPS:-30000}
IDW=${IDW:-1.0}
WIDEN=${WIDEN:-0.5}
D=.regdata
mkdir -p "$D"
# --- environment: wheels, then the rasterizer for this Python (3.12)
if ! python3 -c "import matplotlib, tqdm" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpudata/whl/*.whl
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
if ! python3 -c "import Sim3DR._sim3dr" 2>/dev/null; then
  if ! python3 setup.py build_ext --inplace > "$OUT/build_sim3dr.log" 2>&1; then
    # no setuptools: cythonize and compile by hand with the flags of setup.py
    python3 -m cython --cplus -3 Sim3DR/_sim3dr.pyx -o Sim3DR/_sim3dr.cpp >> "$OUT/build_sim3dr.log" 2>&1
    INC=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    NPI=$(python3 -c "import numpy; print(numpy.get_include())")
    SUF=$(python3 -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
    g++ -O3 -std=c++17 -fno-math-errno -ffp-contract=off -pthread -shared -fPIC \
      -DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION -I"$INC" -I"$NPI" -ISim3DR \
      Sim3DR/_sim3dr.cpp Sim3DR/rasterize.cpp -o "Sim3DR/_sim3dr$SUF" >> "$OUT/build_sim3dr.log" 2>&1
  fi
fi
python3 -c "import Sim3DR._sim3dr" || { echo "Sim3DR did not build: $OUT/build_sim3dr.log"; tail -20 "$OUT/build_sim3dr.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import os; print(len(os.sched_getaffinity(0)), 'cores')" | tee -a "$OUT/gpu.txt"
step() {  # step NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  echo "=== $name ($(date +%T))"
  timeout "$secs" "$@" >> "$OUT/$name.txt" 2>> "$OUT/$name.err"
  echo "rc=$? ($(date +%T))"; tail -n 30 "$OUT/$name.txt"; tail -n 5 "$OUT/$name.err"
}
# nproc honours OMP_NUM_THREADS (set to 1 above for the workers): count the cores with Python
W=$(( $(python3 -c "import os; print(len(os.sched_getaffinity(0)))") - 1 ))
case "${1:-render}" in
  render)  # ~9 min: the held-out set first (small), then as much of the training cache as fits
    DEV=cuda
    step render_heldout 120 python3 -m vox3d.fitting.regressor_data render --heldout --n "$NHELD" --out "$D/heldout" \
      --workers "$W" --device "$DEV" --time-budget 90
    if ! ls "$D/heldout" 2>/dev/null | grep -q shard-; then  # the CUDA crop path failed: CPU detection
      DEV=cpu; echo "CUDA render failed; falling back to CPU detection"
      step render_heldout 120 python3 -m vox3d.fitting.regressor_data render --heldout --n "$NHELD" --out "$D/heldout" \
        --workers "$W" --device "$DEV" --time-budget 90
    fi
    step render 440 python3 -m vox3d.fitting.regressor_data render --n "$N" --out "$D/cache" \
      --workers "$W" --device "$DEV" --time-budget "${RENDER_BUDGET:-400}"
    ls "$D/cache" | grep -c shard- | sed 's/^/training shards: /'
    ;;
  quick)  # one 10-minute call: held-out set, a training cache, then the first training slice
    DEV=${DEV:-cpu}
    step render_heldout 90 python3 -m vox3d.fitting.regressor_data render --heldout --n "$NHELD" --out "$D/heldout" \
      --workers "$W" --device "$DEV" --time-budget "${HELD_BUDGET:-45}"
    step render 330 python3 -m vox3d.fitting.regressor_data render --n "$N" --out "$D/cache" \
      --workers "$W" --device "$DEV" --time-budget "${RENDER_BUDGET:-270}"
    ls "$D/cache" | grep -c shard- | sed 's/^/training shards: /'
    step train 300 python3 -m vox3d.fitting.regressor_data train --cache "$D/cache" --heldout "$D/heldout" \
      --out "$D/ict_regressor.pth" --log "$D/training_curve.tsv" --device cuda --steps "$STEPS" \
      --batch-size 256 --id-weight "$IDW" --widen "$WIDEN" --time-budget "${TRAIN_BUDGET:-200}"
    tail -n 3 "$D/training_curve.tsv"
    ;;
  train)  # resumable: stops after 520 s with a state file; call again until the checkpoint is written
    step train "${TRAIN_SLOT:-565}" python3 -m vox3d.fitting.regressor_data train --cache "$D/cache" --heldout "$D/heldout" \
      --out "$D/ict_regressor.pth" --log "$D/training_curve.tsv" --device cuda --steps "$STEPS" \
      --batch-size 256 --id-weight "$IDW" --widen "$WIDEN" --time-budget "${TRAIN_BUDGET:-520}"
    if [ -f "$D/ict_regressor.json" ]; then
      echo finished; cp "$D/ict_regressor.pth" "$D/ict_regressor.json" "$D/training_curve.tsv" "$OUT/"
    else
      echo "not finished: call train again"; tail -n 3 "$D/training_curve.tsv"
    fi
    ;;
  eval)
    # issue 14 on this machine's CPU (a second CPU model): the oneMKL race with/without the
    # warm-up, and the tiny workflow's training twice (inputs in .gpudata/tinyin)
    step torch_race 60 python3 bench/torch_race.py --processes "${RACE_N:-320}" --wave 16 --threads 2,8
    if [ -d .gpudata/tinyin ]; then
      step cross_cpu_train 90 python3 bench/cross_cpu_train.py --inputs .gpudata/tinyin --repeat 2
    fi
    step eval 300 python3 -m vox3d.fitting.regressor_data eval --checkpoint "$D/ict_regressor.pth" \
      --heldout "$D/heldout" --device cuda --json "$OUT/heldout_accuracy.json"
    cp "$D/ict_regressor.pth" "$D/ict_regressor.json" "$D/training_curve.tsv" "$OUT/" 2>/dev/null
    ;;
  *) echo "usage: $0 render|train|eval"; exit 2 ;;
esac
