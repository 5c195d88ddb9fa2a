#!/usr/bin/env bash
# The stream stage (issue 18) on one GPU node (H100 or H200, 16 cores), through the device
# tool, in one call:
#
#   run(command="bash bench/h200_stream.sh", carry=[".gpunode"])
#
# In this order (the end-to-end figures first; a step starts only with time left):
# 1. node_procs: bench/node.py --stream, the two-stage path (extract processes -> fit on the
#    GPU) and the stream stage (one job, decode processes, features in the job) on the same
#    corpus: byte-identity of the fit shards, the intermediates' bytes against the input's;
# 2. procs_jobs2: stream only, decode processes, two jobs sharing the GPU, BIG copies;
# 3. decode: bench/decode.py, CPU decode in threads against processes (with PyAV's per-frame
#    rgb24 conversion as before, and the decode's one context per video) and NVDEC, parity;
# 4. nvdec_procs2: as 2 with NVDEC (extract.hwaccel: cuda); procs_jobs1: as 2 in one job;
# 5. gpu_tests: the hardware-decode tests (NVDEC frames against the CPU's), on the GPU;
# 6. procs_pickle: one job with the frames pickled instead of handed over through files;
#    threads_jobs2: decode threads, two jobs.
#
# .gpunode/ (ignored; laid out like ../shared/data for VOX3D_DATA): 3ddfa_v2/{FaceBoxesProd.pth,
# mb05_120x120.pth, param_mean_std_62d_120x120.pkl, tri.pkl}, real/voxceleb/ (the 10 real
# VoxCeleb2 clips) and real/MANIFEST.md (the tests' data check), whl/ (cp312 wheels the image lacks: av, soxr, webrtcvad-wheels, librosa,
# audioread, soundfile, cffi, pycparser, decorator, pooch, platformdirs).
# Files back in $OUT: NAME.txt per step above and h200_stream.log (everything).  Env: COPIES (default 120), BIG (240),
# DECODE_COPIES (10), LIMIT (570: seconds for all steps), PY, WHEELS
# (0: use the installed packages; a local dry run: WHEELS=0 PY=.venv/bin/python COPIES=1
# DECODE_COPIES=1 BIG=1 DEVICE=cpu bash bench/h200_stream.sh).
set -u
T0=$(date +%s)
PY=${PY:-python3}
OUT=${OUT:-/tmp/h200_stream_out}
mkdir -p "$OUT"
LOG="$OUT/h200_stream.log"
exec > >(tee -a "$LOG") 2>&1
COPIES=${COPIES:-120}
BIG=${BIG:-240}
DECODE_COPIES=${DECODE_COPIES:-10}
LIMIT=${LIMIT:-570}
left() { echo $((LIMIT - ($(date +%s) - T0))); }

[ "${WHEELS:-1}" = 1 ] && { $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .gpunode/whl/*.whl || { echo "FAILED: wheels"; exit 1; }; }
export PYTHONPATH="/tmp/site:$PWD" VOX3D_DATA="$PWD/.gpunode" NUMBA_CACHE_DIR=/tmp/numba \
  PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
$PY -c "import av, soxr, webrtcvad, librosa, h5py, cv2, torch, vox3d.fitting.stream, vox3d.audio.features;
print('imports ok; torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'av', av.__version__)" \
  || { echo "FAILED: imports"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step() {  # step NAME SECONDS COMMAND...: output to $OUT/NAME.txt, line 1 the command
  local name=$1 limit=$2
  shift 2
  [ "$(left)" -lt 30 ] && { echo "SKIPPED $name: $(left) s left"; return; }
  [ "$limit" -gt "$(left)" ] && limit=$(left)
  echo "== $name (limit $limit s, $(($(date +%s) - T0)) s in)"
  { echo "\$ $*"; timeout "$limit" "$@"; echo "rc $?"; } 2>&1 | tee "$OUT/$name.txt"
}

step node_procs 200 $PY bench/node.py --device "${DEVICE:-cuda}" --copies "$COPIES" --workers 14 \
  --fit-threads 8 --shard-size 256 --stream --stream-processes --stream-threads 15
step procs_jobs2 120 $PY bench/node.py --device "${DEVICE:-cuda}" --copies "$BIG" --shard-size 256 \
  --skip-two-stage --stream --stream-processes --stream-jobs 2 --stream-threads 7
step decode 90 $PY bench/decode.py --copies "$DECODE_COPIES" --threads 15 --hwaccel cuda --processes 15
step nvdec_procs2 100 $PY bench/node.py --device "${DEVICE:-cuda}" --copies "$BIG" --shard-size 256 \
  --skip-two-stage --stream --stream-processes --stream-jobs 2 --stream-threads 7 --hwaccel cuda
step procs_jobs1 100 $PY bench/node.py --device "${DEVICE:-cuda}" --copies "$BIG" --shard-size 256 \
  --skip-two-stage --stream --stream-processes --stream-threads 15
step gpu_tests 60 $PY -m pytest -q -p no:cacheprovider tests/test_stream.py tests/test_extract.py -k hardware
step procs_pickle 100 $PY bench/node.py --device "${DEVICE:-cuda}" --copies "$BIG" --shard-size 256 \
  --skip-two-stage --stream --stream-processes --stream-threads 15 --pickle-frames
step threads_jobs2 100 $PY bench/node.py --device "${DEVICE:-cuda}" --copies "$COPIES" --shard-size 256 \
  --skip-two-stage --stream --stream-jobs 2 --stream-threads 7
echo "DONE in $(($(date +%s) - T0)) s"
