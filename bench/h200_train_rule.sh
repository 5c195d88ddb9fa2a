#!/usr/bin/env bash
# Retrain the ICT regressor on one GPU machine (H100 or H200, 16 cores) exactly as
# `snakemake train_regressor` does (rules/fit.smk -> scripts/train_regressor.py ->
# `python -m vox3d.fitting.regressor_data all ARGV`), time it, and compare the result with the
# committed vox3d/data/ict_regressor.pth (+ .json).  Through the device tool:
#
#   run(command="bash bench/h200_train_rule.sh", carry=[".gpudata", "Sim3DR/_sim3dr.cpp"])
#
# ARGV is built on the machine by running scripts/train_regressor.py itself with a stand-in
# `snakemake` object (params from config.yaml through vox3d.config.load_config, or, where
# jsonschema/snakemake are missing, config.yaml unvalidated: vox3d.config.defaults) and
# capturing what it passes to vox3d.fitting.regressor_data.main.  Two things differ from the rule,
# both printed: --ict points at the carried archive (config's ../shared/... does not travel),
# and --time-budget B is appended so that the run stops and saves its state before the
# tool's 10-minute limit.
#
# Resumable: the render caches (shards) and the training (state file) live in $RR/regressor
# (/tmp/rr/regressor, as OUT/regressor of the rule); a second call of the same command
# resumes there, ON THE SAME WARM MACHINE ONLY (it goes back about 30 s after a call: call
# again at once).  The last line says FINISHED (the rule's wall time summed over its runs),
# NOT FINISHED (call again) or FAILED.
# Time keeping inside one call: --time-budget caps each phase of `all` separately (training
# cache, held-out renders, training), so it is chosen per run from what is left on disk and the
# rates measured by earlier runs: all the time for renders that cannot finish; for renders that
# can, a budget that fits the training after them; for training alone, one that either lets it
# finish with evaluation + calibration (POST s) in the call or stops it with its state saved.
# Guards: the rule's process group is killed HARD (default 540) s after the start (renders and
# training resume from what was saved); once a render phase has stopped at its budget, the
# rule's exit (which only waits for shards it discards) is cut short; when both renders are
# complete and the running budget does not fit training (overrun, or a needlessly early stop),
# the rule is stopped at the held-out line, before training starts, and run again in the same
# call with a fitting budget.  Each run's wall time and phases (render, held-out,
# train+evaluate+save, calibrate) are logged and summed: the repeated start-ups (Kit loads,
# worker spawns, loading the cache onto the GPU) and the shards in flight at a render stop are
# the cost of splitting.  Expect 2-3 calls: the rule's resources note says about 25 min on one
# H200 with 16 cores; the projection line at the end says what is left.
# On the first call, PRECHECK (default 1) first renders the committed checkpoint's held-out set
# (480 samples, data seed 1000003, one worker) and evaluates the committed checkpoint on it:
# equal figures = this machine renders the committed data (its time is not the rule's).
#
# .gpudata/ (ignored; built by `python bench/gpudata.py --wheels DIR`; laid out like ../shared/data for VOX3D_DATA): ict-facekit/ICT-FaceKit.tar.xz
# (a subset with the archive's internal paths: generic_neutral_mesh, identity000-039, the 10
# expressions of vox3d.face.ict_facekit.ICT_DEFAULT_EXPRESSIONS, vertex_indices.json with its
# "expressions" list cut to those 10, LICENSE/README/SOURCE_COMMIT/.mtl; build_gen_model(40, 10)
# digest 42bcfb0e... = the committed json's gen_model_sha256), 3ddfa_v2/FaceBoxesProd.pth, whl/
# (cp312 wheels, installed only for modules the image lacks: tqdm, threadpoolctl, PyYAML,
# matplotlib and what matplotlib.path imports).
#
# Files back in $OUT: h200_train_rule.log (this output), rule.out / rule.err (the rule's
# stdout / stderr of every run, each line stamped with seconds since that run's launch),
# ict_regressor.json, ict_regressor.pth, training_curve.tsv, compare.txt.
# Env: RR (work folder), HARD, POST, PRECHECK, PY; ONLY_CMD (run this shell command on the
# machine set up as above, with $ICT and $PY set, instead of the rule); SMOKE_ARGS (local tests only: appended to
# ARGV, e.g. "--n 16 --n-heldout 8 --steps 2 --n-groups 2 --device cpu --workers 1").
set -u
T0=$(date +%s)
PY=${PY:-python3}
OUT=${OUT:-/tmp/h200_train_rule_out}
if [ -z "${RR:-}" ]; then  # /tmp/rr, or .regdata/rr (ignored; kept on a warm machine) when /tmp is small
  RR=/tmp/rr
  if [ ! -f /tmp/rr/calls.n ] && { [ -f .regdata/rr/calls.n ] || [ "$(df -Pk /tmp | awk 'NR==2 {print $4}')" -lt 25000000 ]; }; then
    RR=$PWD/.regdata/rr
  fi
fi
HARD=${HARD:-540}
PRECHECK=${PRECHECK:-1}
SMOKE_ARGS=${SMOKE_ARGS:-}
export POST=${POST:-75}  # seconds kept for evaluate + save + calibration after training
W=$RR/regressor
L=$RR/logs
B_DIR=$RR/bin
mkdir -p "$OUT" "$W" "$L" "$B_DIR"
exec > >(tee -a "$OUT/h200_train_rule.log") 2>&1
TEE_PID=$!
finish() {  # flush tee before the command returns
  exec 1>&- 2>&-
  wait "$TEE_PID" 2>/dev/null
}
el() { echo $(( $(date +%s) - T0 )); }
say() { echo "[$(date +%T) +$(el)s] $*"; }
CALL=$(( $(cat "$RR/calls.n" 2>/dev/null || echo 0) + 1 ))
echo "$CALL" > "$RR/calls.n"
if [ "$CALL" -gt 1 ]; then
  say "bench/h200_train_rule.sh: call $CALL: resuming in $RR what earlier calls left"
else
  say "bench/h200_train_rule.sh: call 1: FRESH work folder $RR (a resume needs the same warm machine)"
fi
export VOX3D_DATA=$PWD/.gpudata VOX3D_CACHE=$RR/vox3d-cache PYTHONUNBUFFERED=1 PYTHONHASHSEED=0
export MPLCONFIGDIR=/tmp/mpl OMP_NUM_THREADS=1
ICT=$VOX3D_DATA/ict-facekit/ICT-FaceKit.tar.xz
for f in "$ICT" "$VOX3D_DATA/3ddfa_v2/FaceBoxesProd.pth" vox3d/data/ict_regressor.pth vox3d/data/ict_regressor.json; do
  [ -f "$f" ] || { say "FATAL: missing $f (carry .gpudata)"; finish; exit 2; }
done

# ------------------------------------------------------------------ the machine
say "=== machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi failed"; } | tee "$RR/gpu.txt"
"$PY" - <<'EOF'
import os, platform, sys
print("python", sys.version.split()[0], sys.executable)
print("cores (affinity):", len(os.sched_getaffinity(0)), " os.cpu_count:", os.cpu_count())
try:
    m = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
    print("cpu:", m[0] if m else "?")
    mt = [l for l in open("/proc/meminfo") if l.startswith("MemTotal")]
    print("memory:", mt[0].split(":")[1].strip())
except OSError:
    pass
print("kernel:", platform.release())
EOF
df -h /tmp | tail -1 | awk '{print "disk /tmp: " $4 " free of " $2}'
if command -v g++ >/dev/null; then echo "g++: $(g++ --version | head -1)"; else echo "g++: MISSING"; fi
if [ -x /usr/bin/time ]; then echo "/usr/bin/time: present"; else echo "/usr/bin/time: missing (date stamps only)"; fi

# ------------------------------------------------------------------ Python packages
say "=== packages: wheels for modules the image lacks, then versions"
PKGS="numpy scipy cv2 matplotlib PIL kiwisolver cycler pyparsing dateutil packaging tqdm threadpoolctl yaml torch Cython setuptools h5py jsonschema snakemake av"
# wheel distribution name (as in the file name) -> the module that tells whether it is needed
declare -A MOD=([tqdm]=tqdm [threadpoolctl]=threadpoolctl [pyyaml]=yaml [PyYAML]=yaml
  [matplotlib]=matplotlib [pillow]=PIL [kiwisolver]=kiwisolver [cycler]=cycler
  [pyparsing]=pyparsing [python_dateutil]=dateutil [packaging]=packaging [Cython]=Cython [cython]=Cython)
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; fi
NEED=()
for whl in .gpudata/whl/*.whl; do
  [ -f "$whl" ] || continue
  dist=$(basename "$whl" | cut -d- -f1)
  mod=${MOD[$dist]:-$dist}
  "$PY" -c "import $mod" 2>/dev/null || NEED+=("$whl")
done
if [ ${#NEED[@]} -gt 0 ]; then
  say "installing ${#NEED[@]} wheel(s) into /tmp/site: $(for w in "${NEED[@]}"; do basename "$w" | cut -d- -f1-2; done | tr '\n' ' ')"
  mkdir -p /tmp/site
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "${NEED[@]}"; then
    say "pip failed: unpacking the wheels instead"
    for w in "${NEED[@]}"; do "$PY" -m zipfile -e "$w" /tmp/site; done
  fi
  case ":${PYTHONPATH:-}:" in *:/tmp/site:*) ;; *) export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} ;; esac
else
  say "no wheel needed"
fi
"$PY" - $PKGS <<'EOF'
import importlib, sys
for name in sys.argv[1:]:
    try:
        m = importlib.import_module(name)
        v = getattr(m, "__version__", None) or getattr(m, "VERSION", "?")
        print(f"  {name:<14} {v}  {getattr(m, '__file__', '') or ''}")
    except Exception as e:  # noqa: BLE001
        print(f"  {name:<14} MISSING ({type(e).__name__}: {e})")
EOF
for mod in numpy scipy cv2 matplotlib tqdm threadpoolctl yaml torch; do
  "$PY" -c "import $mod" 2>/dev/null || { say "FATAL: $mod missing (the rule's code path imports it)"; finish; exit 2; }
done
"$PY" - <<'EOF'
import json, torch
ref = json.load(open("vox3d/data/ict_regressor.json"))
print(f"torch {torch.__version__} CUDA {torch.version.cuda} cuDNN {torch.backends.cudnn.version()}"
      f" (the committed checkpoint: torch {ref.get('torch')}, device {ref.get('device')})")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs")
else:
    print("GPU: CUDA NOT AVAILABLE")
EOF

# ------------------------------------------------------------------ the rasterizer
say "=== Sim3DR"
if "$PY" -c "import Sim3DR._sim3dr" 2>/dev/null; then
  say "Sim3DR._sim3dr already built: $("$PY" -c 'import Sim3DR._sim3dr as m; print(m.__file__)')"
else
  tb=$(date +%s)
  if "$PY" -c "import Cython, setuptools, numpy" 2>/dev/null \
     && "$PY" setup.py build_ext --inplace -j 2 > "$L/build_sim3dr.log" 2>&1; then
    say "built with setup.py build_ext (Cython $("$PY" -c 'import Cython; print(Cython.__version__)')) in $(( $(date +%s) - tb )) s"
  else
    say "setup.py build_ext not possible or failed ($L/build_sim3dr.log); compiling by hand with setup.py's flags"
    command -v g++ >/dev/null || { say "FATAL: no g++"; finish; exit 2; }
    if [ ! -f Sim3DR/_sim3dr.cpp ]; then
      "$PY" -m cython --cplus -3 Sim3DR/_sim3dr.pyx -o Sim3DR/_sim3dr.cpp >> "$L/build_sim3dr.log" 2>&1 \
        || { say "FATAL: no Sim3DR/_sim3dr.cpp (carry it) and no Cython"; finish; exit 2; }
    fi
    INC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
    NPI=$("$PY" -c "import numpy; print(numpy.get_include())")
    SUF=$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
    g++ -O3 -std=c++17 -fno-math-errno -ffp-contract=off -pthread -shared -fPIC -fwrapv -DNDEBUG \
      -DNPY_NO_DEPRECATED_API=NPY_1_7_API_VERSION -I"$INC" -I"$NPI" -ISim3DR \
      Sim3DR/_sim3dr.cpp Sim3DR/rasterize.cpp -o "Sim3DR/_sim3dr$SUF" >> "$L/build_sim3dr.log" 2>&1
    say "g++ done in $(( $(date +%s) - tb )) s"
  fi
  "$PY" -c "import Sim3DR._sim3dr" || { say "FATAL: Sim3DR did not build"; tail -20 "$L/build_sim3dr.log"; finish; exit 2; }
fi

# ------------------------------------------------------------------ ONLY_CMD: another command on this set-up
if [ -n "${ONLY_CMD:-}" ]; then
  say "=== ONLY_CMD (instead of the rule): $ONLY_CMD"
  ICT="$ICT" PY="$PY" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" bash -c "$ONLY_CMD"
  RC=$?
  say "ONLY_CMD exit $RC"
  finish
  exit "$RC"
fi

# ------------------------------------------------------------------ helpers (Python)
# argv.py: the rule script's own argv (scripts/train_regressor.py run with a stand-in snakemake)
cat > "$B_DIR/argv.py" <<'EOF'
import json, os, runpy, sys, types
repo, work, ict, logpath, outpath = sys.argv[1:6]
sys.path[:0] = [repo, os.path.join(repo, "scripts")]
try:
    from vox3d.config import load_config
    cfg = load_config()
    how = "vox3d.config.load_config() (validated, config.yaml's defaults filled)"
except ImportError as e:  # no jsonschema / snakemake on the machine: the defaults unvalidated
    from vox3d.config import defaults
    cfg = defaults()
    how = f"vox3d.config.defaults() (config.yaml; load_config needs {e.name})"
reg, fm = cfg["fit"]["regressor"], cfg["face_model"]
ncores = len(os.sched_getaffinity(0))
threads = min(int(reg["workers"]) + 1, ncores)  # rule threads, capped at the cores (snakemake --cores)
captured = {}
import vox3d.fitting.regressor_data as rd
def fake_main(argv):
    captured["argv"] = list(argv)
    return 0
rd.main = fake_main
smk = types.SimpleNamespace(
    params=types.SimpleNamespace(regressor=reg, face_model=fm, ict=ict),
    output=types.SimpleNamespace(pth=os.path.join(work, "ict_regressor.pth"),
                                 json=os.path.join(work, "ict_regressor.json")),
    log=[logpath], threads=threads)
runpy.run_path(os.path.join(repo, "scripts", "train_regressor.py"), init_globals={"snakemake": smk})
argv = captured["argv"]
json.dump({"argv": argv, "how": how, "threads": threads, "config_ict": cfg["assets"]["ict_facekit"],
           "regressor": reg, "face_model": fm}, open(outpath, "w"), indent=1)
print("config:", how)
print("fit.regressor:", json.dumps(reg))
print(f"face_model: n_id {fm['n_id']}, n_exp {fm['n_exp']}; rule threads {threads} "
      f"(workers {reg['workers']} + 1, at most the {ncores} cores)")
print(f"--ict: config assets.ict_facekit = {cfg['assets']['ict_facekit']} -> {ict} (the carried subset)")
EOF

# state.py: what earlier runs left, and this run's --time-budget
cat > "$B_DIR/state.py" <<'EOF'
import json, math, os, sys, time
work, rr, deadline = sys.argv[1], sys.argv[2], float(sys.argv[3])
argv = json.load(open(os.path.join(rr, "argv_final.json")))
def opt(flag, default=None):
    return argv[len(argv) - 1 - argv[::-1].index(flag) + 1] if flag in argv else default
n, n_held = int(opt("--n", 300000)), int(opt("--n-heldout", 2000))
steps, workers = int(opt("--steps", 30000)), int(opt("--workers", 1))
ss = int(opt("--shard-size", 1024))
def shards(folder, n):
    want = math.ceil(n / ss)
    have = sum(os.path.isfile(os.path.join(folder, f"shard-{k:05d}.npz")) for k in range(want))
    return have, want
c_have, c_want = shards(opt("--cache"), n)
h_have, h_want = shards(opt("--heldout"), n_held)
state = os.path.splitext(opt("--out"))[0] + ".state.pt"
step = 0
if os.path.isfile(state):
    import torch
    step = int(torch.load(state, map_location="cpu", weights_only=True)["step"])
tsv = opt("--log")
if tsv and os.path.isfile(tsv):  # rows that a killed training segment wrote past its saved state
    rows = [r for r in open(tsv).read().splitlines() if r.strip()]
    keep = [r for r in rows if float(r.split("\t")[0]) <= step]
    if len(keep) != len(rows):
        open(tsv, "w").write("".join(r + "\n" for r in keep))
        print(f"training_curve.tsv: dropped {len(rows) - len(keep)} rows past the saved state (step {step})")
jp = os.path.splitext(opt("--out"))[0] + ".json"
calibrated = os.path.isfile(jp) and "identity_calibration" in json.load(open(jp))
rp = os.path.join(rr, "rates.json")
rates = json.load(open(rp)) if os.path.isfile(rp) else {}
rate = float(rates.get("render_sps", 450.0))  # training-cache renders/s, all workers
sec_step = float(rates.get("train_s_per_step", 0.022))
shard_wall = ss * max(workers, 1) / rate  # one worker's time for one shard
rem = deadline - time.time() - 3
kit = 4.0  # start-up + Kit.load of a render phase with nothing left to render
e_cache = kit if c_have == c_want else 20 + math.ceil((c_want - c_have) / max(workers, 1)) * shard_wall * 1.1
e_held = kit if h_have == h_want else 20 + 1.5 * shard_wall * 1.1
e_train = 5.0 if step >= steps else 35 + (steps - step) * sec_step
post = float(os.environ.get("POST", 75))
print(f"training cache: {c_have}/{c_want} shards; held-out: {h_have}/{h_want}; "
      f"training: step {step}/{steps}; calibrated json: {calibrated}")
print(f"rates: {rate:.0f} renders/s ({'measured' if 'render_sps' in rates else 'assumed'}), "
      f"{sec_step * 1000:.1f} ms/step ({'measured' if 'train_s_per_step' in rates else 'assumed'})")
print(f"estimates: render {e_cache:.0f} s, held-out {e_held:.0f} s, train {e_train:.0f} s, "
      f"evaluate+calibrate {post:.0f} s; {rem:.0f} s left in this call")
if os.environ.get("PROJECT"):  # what is left, in calls of the tool (setup ~40 s each)
    left_s = (e_cache if c_have < c_want else 0) + (e_held if h_have < h_want else 0) \
        + (e_train if step < steps else 0) + (0 if calibrated else post)
    calls = 0 if calibrated else math.ceil(left_s / 480)
    print(f"projection: about {left_s:.0f} s of rule time left -> {calls} more call(s) of up to 10 min "
          f"(render {rate:.0f}/s{' measured' if 'render_sps' in rates else ' assumed'})")
    sys.exit(0)
avail = rem - e_cache - e_held  # left when training starts
if e_train * 1.15 <= avail - post:
    b_train, plan_t = avail - post - 5, "expected to FINISH in this run"
else:
    b_train, plan_t = avail - 15, "training stops at the budget and saves its state (exit 3)"
if c_have < c_want or h_have < h_want:
    # the budget caps every phase: the renders must not be cut short by a training-sized one
    need = 1.3 * max(e_cache, e_held) + 20
    if e_cache + e_held + 60 > rem:
        budget, plan = rem - 5, "render (the training cache will not be finished in this call)"
    elif b_train >= max(need, 60):
        budget, plan = b_train, "render, then train: " + plan_t
    else:  # renders get all the time; the runner re-launches at the held-out line for training
        budget, plan = rem - 5, "render, then a re-launch for training at the held-out line"
else:
    budget, plan = b_train, plan_t
budget = int(max(budget, 30.0))
print(f"plan: {plan}; --time-budget {budget}")
print(f"BUDGET {budget} {e_train:.0f}")
EOF

# runner.py: run the rule in its own session; stamp its lines; watchdog; phase markers
cat > "$B_DIR/runner.py" <<'EOF'
import json, os, re, signal, subprocess, sys, threading, time
cfg = json.loads(open(sys.argv[1]).read())
cmd, deadline = cfg["cmd"], float(cfg["deadline"])
budget, train_need, post = float(cfg["budget"]), float(cfg["train_need"]), float(cfg["post"])
t0 = time.time()
p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
ev, lock = [], threading.Lock()
st = {"json": [], "render_stop": None, "rebudget": None, "last_echo": {}, "shard_last": {},
      "tqdm_last": None, "timev": {}}
MARK = [("json", re.compile(r'^\{.*"complete"')), ("resume", re.compile(r"^resuming at step")),
        ("stopped", re.compile(r"^stopped at step")), ("accuracy", re.compile(r"^yaw bin")),
        ("saved", re.compile(r"^wrote .* sha256")), ("calib_table", re.compile(r"^identity calibration:")),
        ("calibrated", re.compile(r"^wrote identity_calibration")),
        ("error", re.compile(r"^(Traceback|[A-Za-z_.]*Error\b)"))]
SHARD = re.compile(r"^shard \d+: (\d+)/(\d+) in (\d+) s \((\d+) samples/s\)")
TQDM = re.compile(r"^train ict regressor:")
def echo(kind, t, line, every):
    now = time.time()
    if now - st["last_echo"].get(kind, 0) >= every:
        st["last_echo"][kind] = now
        print(f"    [{t:6.1f}s] {line[:200]}", flush=True)
def on_json(line):
    st["json"].append(line)
    if '"complete": false' in line:
        st["render_stop"] = time.time()
    elif len(st["json"]) == 2:  # both renders complete: training starts now, with --time-budget `budget`
        left = deadline - time.time()
        if train_need * 1.15 <= left - post:  # it can finish: it must not stop early
            ideal = min(left - post - 5, budget)
            ok = train_need <= budget <= left - 10
        else:  # it cannot: it must stop (and save) before the deadline, and not much earlier
            ideal = left - 15
            ok = left - 60 <= budget <= left - 10
        if not ok and left > 90:
            st["rebudget"] = f"training budget {budget:.0f} s does not fit the {left:.0f} s left (wants ~{ideal:.0f})"
def pump(stream, path, name):
    buf = b""
    with open(path, "a", buffering=1) as fh:
        while True:
            chunk = os.read(stream.fileno(), 1 << 16)
            if not chunk:
                break
            parts = re.split(rb"[\r\n]", buf + chunk)
            buf = parts.pop()
            for raw in parts:
                line = raw.decode("utf-8", "replace").rstrip()
                if not line.strip():
                    continue
                t = time.time() - t0
                fh.write(f"{t:8.1f}\t{line}\n")
                with lock:
                    for kind, rx in MARK:
                        if rx.search(line):
                            ev.append((round(t, 1), kind, line[:300]))
                            if kind == "json":
                                on_json(line)
                    m = SHARD.search(line)
                    if m:
                        k = len(st["json"])
                        phase = ["cache", "heldout"][k] if k < 2 else "calibration"
                        st["shard_last"][phase] = [round(t, 1)] + [int(x) for x in m.groups()]
                        echo("shard", t, line, 30)
                        continue
                    if TQDM.search(line):
                        st["tqdm_last"] = (round(t, 1), line)
                        echo("tqdm", t, line, 30)
                        continue
                    if name == "err" and raw.startswith(b"\t") and ": " in line:  # /usr/bin/time -v
                        k, v = line.strip().split(": ", 1)
                        st["timev"][k] = v
                        continue
                    print(f"    [{t:6.1f}s] {line[:300]}", flush=True)
th = [threading.Thread(target=pump, args=(p.stdout, cfg["out"], "out")),
      threading.Thread(target=pump, args=(p.stderr, cfg["err"], "err"))]
for x in th:
    x.start()
killed = None
def kill(why):
    global killed
    killed = why
    print(f"    [{time.time() - t0:6.1f}s] runner: stopping the rule's process group ({why})", flush=True)
    for sig, wait in ((signal.SIGTERM, 8), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        t1 = time.time()
        while p.poll() is None and time.time() - t1 < wait:
            time.sleep(0.2)
        if p.poll() is not None:
            return
while p.poll() is None:
    time.sleep(0.25)
    if time.time() > deadline:
        kill("deadline")
    elif st["rebudget"]:
        kill("rebudget: " + st["rebudget"])
    elif st["render_stop"] and time.time() - st["render_stop"] > 3:
        kill("render-stop: a render phase stopped at its budget; the exit only waits for shards it discards")
rc = p.wait()
try:
    os.killpg(p.pid, signal.SIGKILL)  # leftovers of the session, if any
except (ProcessLookupError, PermissionError):
    pass
for x in th:
    x.join(10)
wall = time.time() - t0
res = {"rc": rc, "killed": killed, "kind": killed.split(":")[0] if killed else None,
       "wall_s": round(wall, 1), "events": ev, "shard_last": st["shard_last"],
       "tqdm_last": st["tqdm_last"], "time_v": st["timev"], "t0": t0}
json.dump(res, open(cfg["result"], "w"), indent=1)
tv = st["timev"]
extra = f"; /usr/bin/time: max RSS {tv.get('Maximum resident set size (kbytes)', '?')} kB" if tv else ""
print(f"rule process: exit {rc}{' (' + killed + ')' if killed else ''} after {wall:.1f} s{extra}")
EOF

# phases.py: per-phase times of one run (from the runner's markers) and of all runs; rates
cat > "$B_DIR/phases.py" <<'EOF'
import json, os, sys
rr, run_id, result = sys.argv[1], sys.argv[2], sys.argv[3]
res = json.load(open(result))
ev = res["events"]
def first(kind, after=-1.0):
    return next((t for t, k, _ in ev if k == kind and t > after), None)
jsons = [t for t, k, _ in ev if k == "json"]
end = res["wall_s"]
ph = {}
t_cache = jsons[0] if jsons else None
t_held = jsons[1] if len(jsons) > 1 else None
ph["render training cache (incl. start-up)"] = t_cache if t_cache is not None else end
if t_cache is not None:
    ph["render held-out"] = (t_held if t_held is not None else end) - t_cache
if t_held is not None:
    t_saved, t_stop = first("saved", t_held), first("stopped", t_held)
    ph["train + evaluate + save"] = (t_saved or t_stop or end) - t_held
    if t_saved is not None:
        t_cal = first("calibrated", t_saved)
        ph["calibrate"] = (t_cal if t_cal is not None else end) - t_saved
ph["exit / after the last marker"] = end - sum(ph.values())
row = {"run": run_id, "rc": res["rc"], "killed": res["killed"], "wall_s": end,
       "phases": {k: round(v, 1) for k, v in ph.items()}}
hp = os.path.join(rr, "phases.json")
hist = [h for h in (json.load(open(hp)) if os.path.isfile(hp) else []) if h["run"] != run_id] + [row]
json.dump(hist, open(hp, "w"), indent=1)
print(f"run {run_id}: rule process {end:.1f} s, exit {res['rc']}" + (f" ({res['killed']})" if res["killed"] else ""))
for k, v in ph.items():
    print(f"  {k:<42} {v:8.1f} s")
ORDER = ["render training cache (incl. start-up)", "render held-out", "train + evaluate + save", "calibrate",
         "exit / after the last marker"]
tot = {k: 0.0 for k in ORDER}
for h in hist:
    for k, v in h["phases"].items():
        tot[k] = tot.get(k, 0.0) + v
print(f"all {len(hist)} run(s) so far: rule processes {sum(h['wall_s'] for h in hist):.1f} s; per phase:")
for k, v in tot.items():
    print(f"  {k:<42} {v:8.1f} s")
# rates for the next run's budget
rp = os.path.join(rr, "rates.json")
rates = json.load(open(rp)) if os.path.isfile(rp) else {}
c = res["shard_last"].get("cache")
if c and c[1] >= 5:  # [t, done, todo, seconds, samples/s] of the last training-cache shard line
    rates["render_sps"] = float(c[4])
curve = os.path.join(rr, "regressor", "training_curve.tsv")
if os.path.isfile(curve):
    rows = [list(map(float, r.split("\t"))) for r in open(curve).read().split("\n") if r.strip()]
    d = [(b[0] - a[0], b[5] - a[5]) for a, b in zip(rows, rows[1:]) if b[5] > a[5] and b[0] > a[0]]
    if len(d) >= 5:
        rates["train_s_per_step"] = sum(x[1] for x in d) / sum(x[0] for x in d)
json.dump(rates, open(rp, "w"))
if rates:
    print("measured: " + ", ".join(f"{k} {v:.4g}" for k, v in rates.items()))
EOF

# compare.py: the new checkpoint (or what there is so far) against the committed one
cat > "$B_DIR/compare.py" <<'EOF'
import hashlib, json, math, os, sys
import numpy as np
new_dir, ref_pth, ict, device = sys.argv[1:5]
N_REF_HELD = 480  # the committed json's held-out set: samples 0-479 of data seed 1000003
ref = json.load(open(os.path.splitext(ref_pth)[0] + ".json"))
pth, jp = os.path.join(new_dir, "ict_regressor.pth"), os.path.join(new_dir, "ict_regressor.json")
new = json.load(open(jp)) if os.path.isfile(jp) and os.path.isfile(pth) else None
def sha(p):
    return hashlib.sha256(open(p, "rb").read()).hexdigest()
def leaves(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in a and k in b:
                yield from leaves(a[k], b[k], f"{path}.{k}")
            else:
                yield (f"{path}.{k}", "only in " + ("committed" if k in a else "new"), None)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from leaves(x, y, f"{path}[{i}]")
    elif (isinstance(a, (int, float)) and isinstance(b, (int, float))
          and not isinstance(a, bool) and not isinstance(b, bool)):
        yield (path, float(a), float(b))
    else:
        yield (path, a, b)
def numdiff(a, b):
    """(max abs diff, where), (max rel diff, where), numbers compared, other differences"""
    mabs, mrel, n, other = (0.0, ""), (0.0, ""), 0, []
    for p, x, y in leaves(a, b):
        if isinstance(x, float) and isinstance(y, float):
            if math.isnan(x) and math.isnan(y):
                continue
            d = abs(x - y) if not (math.isnan(x) or math.isnan(y)) else math.inf
            r = d / abs(x) if x else (0.0 if d == 0 else math.inf)
            n += 1
            if d > mabs[0]:
                mabs = (d, p)
            if r > mrel[0]:
                mrel = (r, p)
        elif x != y:
            other.append(f"{p}: {x!r} vs {y!r}")
    return mabs, mrel, n, other
print(f"=== comparison with the committed checkpoint {ref_pth}")
print(f"committed: sha256 {sha(ref_pth)[:16]} (its json: {ref.get('sha256', '?')[:16]}), steps_done {ref.get('steps_done')}, "
      f"{ref.get('train_samples_valid')} valid of {ref.get('train_samples_rendered')} renders, torch {ref.get('torch')}")
if new is not None:
    import torch
    a = torch.load(pth, map_location="cpu", weights_only=True)
    b = torch.load(ref_pth, map_location="cpu", weights_only=True)
    print(f"new:       sha256 {sha(pth)[:16]} (its json: {new.get('sha256', '?')[:16]}), steps_done {new.get('steps_done')}, "
          f"{new.get('train_samples_valid')} valid of {new.get('train_samples_rendered')} renders, torch {new.get('torch')}, "
          f"{os.path.getsize(pth)} bytes")
    print(f".pth files identical: {sha(pth) == sha(ref_pth)}")
    keys = sorted(set(a) | set(b))
    rows, same, worst, ints, int_diff = [], 0, 0.0, 0, []
    for k in keys:
        if k not in a or k not in b:
            rows.append((math.inf, k, "only in " + ("new" if k in a else "committed")))
            continue
        x, y = a[k], b[k]
        if x.shape != y.shape or x.dtype != y.dtype:
            rows.append((math.inf, k, f"shape/dtype {tuple(x.shape)} {x.dtype} vs {tuple(y.shape)} {y.dtype}"))
            continue
        eq = bool(torch.equal(x, y))
        same += eq
        if not x.is_floating_point():  # BatchNorm num_batches_tracked: the step count
            ints += 1
            if not eq:
                int_diff.append(f"{k} {x.tolist()} vs {y.tolist()}")
            continue
        d = 0.0 if eq else float((x.double() - y.double()).abs().max())
        scale = float(y.double().abs().max()) if y.numel() else 0.0
        worst = max(worst, d)
        rows.append((d, k, f"max|diff| {d:.3e}  (max|committed| {scale:.3e}, {tuple(x.shape)})"))
    print(f"state dict: {len(keys)} tensors, {same} bit-identical, {len(keys) - same} differ; "
          f"float tensors: max abs difference {worst:.3e}; integer counters ({ints}): "
          + ("all equal" if not int_diff else f"{len(int_diff)} differ, e.g. {int_diff[0]} (new vs committed)"))
    show = len(rows) if os.environ.get("ALL_TENSORS") else 10
    for d, k, txt in sorted(rows, key=lambda r: -r[0])[:show]:
        print(f"  {k:<44} {txt}")
    if len(rows) > show:
        print(f"  ... {len(rows) - show} more float tensors with smaller differences (ALL_TENSORS=1 lists all)")
    print("json (committed | new):")
    for k in ("steps", "steps_done", "train_samples_rendered", "train_samples_valid", "codec", "data_seed",
              "gen_model_sha256", "heldout", "device", "torch", "widen", "num_params"):
        print(f"  {k:<24} {json.dumps(ref.get(k))} | {json.dumps(new.get(k))}"
              f"{'' if ref.get(k) == new.get(k) else '   <- differs'}")
    for k in ("generator", "training"):
        diffs = [f"{p[1:]} {x!r} | {y!r}" for p, x, y in leaves(ref.get(k, {}), new.get(k, {})) if x != y]
        print(f"  {k:<24} " + ("same" if not diffs else "differs: " + "; ".join(diffs)))
    for k in ("param_mean", "param_std"):
        x, y = np.array(ref[k]), np.array(new[k])
        print(f"  {k:<24} max abs diff {np.abs(x - y).max():.3e} (whitening statistics of the training targets)")
    ra, na = ref["heldout_accuracy"], new["heldout_accuracy"]
    print(f"held-out accuracy as written in each json: committed on {ra['n']} valid of {ra.get('n_rendered')} renders | "
          f"new on {na['n']} valid of {na.get('n_rendered')} (the rule renders --n-heldout 2000: like-for-like below)")
    for k in ("id_sim_ratio", "id_sim_mm", "mean_face_sim_mm", "vertex_mm", "id_vertex_mm", "nme", "yaw_err_deg"):
        print(f"  all.{k:<20} {ra['all'][k]:10.5f} | {na['all'][k]:10.5f}")
    for k in ("id_r2_mean", "id_slope_mean"):
        print(f"  {k:<24} {ra[k]:10.5f} | {na[k]:10.5f}")
    rc, nc = ref.get("identity_calibration"), new.get("identity_calibration")
    if rc and nc:
        sel = ("s", "bias", "v", "rho", "sigma", "r2")
        ma, mr, n, _ = numdiff({k: rc[k] for k in sel}, {k: nc[k] for k in sel})
        print(f"identity_calibration: n_samples {rc.get('n_samples')} | {nc.get('n_samples')}, n_valid "
              f"{rc.get('n_valid')} | {nc.get('n_valid')}; over s, bias, v, rho, sigma, r2 ({n} numbers): "
              f"max abs diff {ma[0]:.3e} at {ma[1]}")
    else:
        print(f"identity_calibration: committed {'yes' if rc else 'no'} | new {'yes' if nc else 'NO (not calibrated yet)'}")
else:
    print("new: no checkpoint yet")
# training curve: the committed json's rows vs this run's tsv rows so far
tsv = os.path.join(new_dir, "training_curve.tsv")
rcu = {int(r[0]): r for r in ref.get("training_curve", [])}
rows = ([list(map(float, r.split("\t"))) for r in open(tsv).read().split("\n") if r.strip()]
        if os.path.isfile(tsv) else [])
ncu = {int(r[0]): r for r in rows}
common = sorted(set(rcu) & set(ncu))
if common:
    cols = ["param_mse", "vertex_px", "identity_mm2", "lr"]
    dmax = [max(abs(rcu[s][i] - ncu[s][i]) for s in common) for i in range(1, 5)]
    # the tsv holds 6 significant digits: count rows that differ beyond that
    nd = [s for s in common if any(abs(rcu[s][i] - ncu[s][i]) > 1e-5 * max(abs(rcu[s][i]), 1e-12) for i in range(1, 5))]
    print(f"training curve: {len(common)} common rows (steps {common[0]}-{common[-1]}); {len(nd)} differ beyond the "
          f"tsv's 6 digits{' (first at step ' + str(nd[0]) + ')' if nd else ''}; max abs diff "
          + ", ".join(f"{c} {d:.3g}" for c, d in zip(cols, dmax)))
    print(f"  {'step':>6} | committed: {'param_mse':>9} {'vertex_px':>9} {'id_mm2':>8} {'lr':>10} | new: "
          f"{'param_mse':>9} {'vertex_px':>9} {'id_mm2':>8} {'lr':>10}")
    for s in common[-6:]:
        r, q = rcu[s], ncu[s]
        print(f"  {s:>6} | {r[1]:20.6g} {r[2]:9.6g} {r[3]:8.6g} {r[4]:10.4g} | {q[1]:14.6g} {q[2]:9.6g} {q[3]:8.6g} {q[4]:10.4g}")
    print("  (a row right after a resume point averages fewer batches: it may differ while the weights do not;"
          " the committed run resumed once, its row 9200)")
elif rows:
    print("training curve: no step in common with the committed one")
# like-for-like: the checkpoints on samples 0-479 of this run's held-out set
held = os.path.join(new_dir, "heldout")
if os.path.isfile(os.path.join(held, "shard-00000.npz")):
    import torch
    from vox3d.fitting.ict_checkpoint import load_model
    from vox3d.fitting.ict_eval import accuracy_tables, predict_crops
    from vox3d.fitting.ict_generator import build_gen_model
    from vox3d.fitting.regressor_cache import load_cache
    torch.backends.cudnn.benchmark = False  # as in the training process, which evaluated
    torch.backends.cudnn.deterministic = True  # the committed checkpoint (ict_train._training_device)
    d = load_cache(held, keys=("crops", "params", "euler", "index"))
    keep = d["index"] < N_REF_HELD
    gm = build_gen_model(int(ref["n_id"]), int(ref["n_exp"]), ict)
    cks = [("committed", ref_pth)] + ([("new", pth)] if new is not None else [])
    accs = {}
    for name, ck in cks:
        model, mean, std, _ = load_model(ck, device)
        pred = predict_crops(model, d["crops"][keep], device) * std + mean
        accs[name] = accuracy_tables(gm, pred.astype(np.float64), d["params"][keep].astype(np.float64),
                                     d["euler"][keep, 0].astype(np.float64))
    ra = {k: v for k, v in ref["heldout_accuracy"].items() if k != "n_rendered"}
    ma, mr, n, other = numdiff(ra, accs["committed"])
    print(f"like-for-like held-out: samples 0-{N_REF_HELD - 1} of this run's held-out set ({int(keep.sum())} valid; "
          f"the committed json: {ref['heldout_accuracy']['n']} valid of {ref['heldout_accuracy'].get('n_rendered')})")
    print(f"  committed checkpoint here vs its json's heldout_accuracy ({n} numbers): max abs diff {ma[0]:.3e} "
          f"at {ma[1]}, max rel diff {mr[0]:.3e} at {mr[1]}{'; ' + '; '.join(other[:3]) if other else ''} -> "
          + ("held-out renders REPRODUCED (identical figures)" if mr[0] < 1e-6 and not other else
             "held-out renders REPRODUCED within inference rounding (< 1e-4)" if mr[0] < 1e-4 and not other else
             "held-out renders DIFFER from the committed ones"))
    if "new" in accs:
        ma, mr, n, _ = numdiff(accs["committed"], accs["new"])
        print(f"  new vs committed checkpoint on the same crops: max abs diff {ma[0]:.3e} at {ma[1]}")
        for k in ("id_sim_ratio", "nme", "yaw_err_deg", "vertex_mm"):
            print(f"    all.{k:<18} committed {accs['committed']['all'][k]:.6f}   new {accs['new']['all'][k]:.6f}")
        print(f"    id_r2_mean             committed {accs['committed']['id_r2_mean']:.6f}   new {accs['new']['id_r2_mean']:.6f}")
EOF

# ------------------------------------------------------------------ argv
say "=== the rule's argv"
"$PY" "$B_DIR/argv.py" "$PWD" "$W" "$ICT" "$L/train_regressor.log" "$RR/argv.json" || { say "FATAL: argv"; finish; exit 2; }
mapfile -t ARGV < <("$PY" -c "import json,sys; print('\n'.join(json.load(open(sys.argv[1]))['argv']))" "$RR/argv.json")
if [ -n "$SMOKE_ARGS" ]; then
  # shellcheck disable=SC2206
  ARGV+=($SMOKE_ARGS)
  say "SMOKE_ARGS appended (local test, not the rule): $SMOKE_ARGS"
fi
"$PY" -c "import json,sys; json.dump(sys.argv[2:], open(sys.argv[1], 'w'))" "$RR/argv_final.json" "${ARGV[@]}"
echo "python -m vox3d.fitting.regressor_data ${ARGV[*]}"
if [ -f "$RR/argv.prev" ] && [ "$(cat "$RR/argv.prev")" != "${ARGV[*]}" ]; then
  say "WARNING: this argv differs from the earlier call's: $(cat "$RR/argv.prev")"
fi
echo "${ARGV[*]}" > "$RR/argv.prev"

# ------------------------------------------------------------------ precheck (first call)
if [ "$PRECHECK" = 1 ] && [ ! -f "$RR/precheck.done" ]; then
  say "=== precheck: the committed checkpoint on its own held-out renders (480, data seed 1000003), rendered here"
  tp=$(date +%s)
  DEV=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
  "$PY" -m vox3d.fitting.regressor_data render --heldout --n 480 --out "$RR/precheck/heldout" --workers 1 \
      --device "$DEV" --n-id 40 --n-exp 10 --seed 0 --codec jpeg --ict "$ICT" > "$L/precheck.txt" 2>&1 \
    && "$PY" -c "import sys, torch; torch.backends.cudnn.benchmark = False; torch.backends.cudnn.deterministic = True
from vox3d.fitting.regressor_data import main; sys.exit(main(sys.argv[1:]))" eval --checkpoint vox3d/data/ict_regressor.pth \
      --heldout "$RR/precheck/heldout" --device "$DEV" --ict "$ICT" --json "$RR/precheck/acc.json" >> "$L/precheck.txt" 2>&1
  "$PY" - "$RR/precheck/acc.json" > "$RR/precheck.verdict" 2>&1 <<'EOF' || { echo "  PRECHECK FAILED to run: $(tail -3 "$L/precheck.txt")" >> "$RR/precheck.verdict"; }
import json, math, sys
new = json.load(open(sys.argv[1]))
ref = json.load(open("vox3d/data/ict_regressor.json"))["heldout_accuracy"]
def flat(d, p=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, p + k + ".")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                yield f"{p}{k}[{i}]", x
        else:
            yield p + k, v
a, b = dict(flat(ref)), dict(flat(new))
both = [k for k in a if k in b and not (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k]))]
worst = max(((abs(a[k] - b[k]) / max(abs(a[k]), 1e-30), k) for k in both), default=(0.0, ""))
print(f"  committed json: {ref['n']} valid of {ref.get('n_rendered')}; here: {new['n']} valid of {new.get('n_rendered')}")
print(f"  id_sim_ratio {ref['all']['id_sim_ratio']:.6f} | {new['all']['id_sim_ratio']:.6f}; nme {ref['all']['nme']:.6f} | "
      f"{new['all']['nme']:.6f}; id_r2_mean {ref['id_r2_mean']:.6f} | {new['id_r2_mean']:.6f}")
same = ref["n"] == new["n"] and set(a) == set(b)
verdict = ("OK: identical figures: this machine renders the committed held-out data" if same and worst[0] < 1e-6 else
           "OK within inference rounding (< 1e-4): the same held-out data" if same and worst[0] < 1e-4 else
           "DIFFERS: the renders (or crops) differ from the committed ones: expect another checkpoint")
print(f"  max rel diff {worst[0]:.3e} at {worst[1]} -> PRECHECK {verdict}")
EOF
  cat "$RR/precheck.verdict"
  touch "$RR/precheck.done"
  say "precheck took $(( $(date +%s) - tp )) s (not part of the rule's time)"
fi

# ------------------------------------------------------------------ the rule
DEADLINE=$(( T0 + HARD ))
calibrated() { "$PY" -c "import json,sys; sys.exit(0 if 'identity_calibration' in json.load(open(sys.argv[1])) else 1)" "$W/ict_regressor.json" 2>/dev/null; }
RC=0
if [ -f "$RR/finished" ] && calibrated; then
  say "=== the rule finished in an earlier call: not run again (rm -r $RR to start over)"
else
  TIMEV=(); [ -x /usr/bin/time ] && TIMEV=(/usr/bin/time -v)
  RUN=0
  while :; do
    RUN=$((RUN + 1)); RID="$CALL.$RUN"
    say "=== budget (run $RID)"
    "$PY" "$B_DIR/state.py" "$W" "$RR" "$DEADLINE" > "$L/state.$RID.txt" 2>&1
    cat "$L/state.$RID.txt"
    read -r _ BUDGET TRAIN_NEED < <(grep '^BUDGET' "$L/state.$RID.txt")
    [ -n "${BUDGET:-}" ] || { say "FATAL: no budget"; RC=2; break; }
    "$PY" - "$RR/runner.$RID.json" "$DEADLINE" "$BUDGET" "$TRAIN_NEED" "$POST" "$L" "$RR/run.$RID.json" \
        "${TIMEV[@]}" "$PY" -m vox3d.fitting.regressor_data "${ARGV[@]}" --time-budget "$BUDGET" <<'EOF'
import json, sys
path, deadline, budget, need, post, logs, result, *cmd = sys.argv[1:]
json.dump({"cmd": cmd, "deadline": float(deadline), "budget": float(budget), "train_need": float(need),
           "post": float(post), "out": f"{logs}/rule.out", "err": f"{logs}/rule.err", "result": result},
          open(path, "w"))
EOF
    say "=== rule run $RID: python -m vox3d.fitting.regressor_data all ... --time-budget $BUDGET (hard stop at +${HARD}s)"
    echo "### run $RID $(date -u +%FT%TZ) --time-budget $BUDGET" | tee -a "$L/rule.out" >> "$L/rule.err"
    "$PY" "$B_DIR/runner.py" "$RR/runner.$RID.json"
    read -r RC KIND < <("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['rc'] if not r['killed'] else 3, r['kind'] or '-')" "$RR/run.$RID.json")
    say "=== phases (run $RID)"
    "$PY" "$B_DIR/phases.py" "$RR" "$RID" "$RR/run.$RID.json"
    if [ "$RC" = 0 ] && calibrated; then touch "$RR/finished"; break; fi
    [ "$RC" = 3 ] || { RC=${RC:-1}; break; }  # failed
    LEFT=$(( DEADLINE - $(date +%s) ))
    STOPPED_IN_TRAIN=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(int(any(k == 'stopped' for _, k, _ in r['events'])))" "$RR/run.$RID.json")
    if [ "$RUN" -lt 5 ] && { { [ "$KIND" = rebudget ] || [ "$KIND" = render-stop ]; } && [ "$LEFT" -gt 90 ] \
         || { [ "$STOPPED_IN_TRAIN" = 1 ] && [ "$LEFT" -gt 120 ]; }; }; then
      say "re-launching in this call ($KIND; ${LEFT} s left)"
      continue
    fi
    break
  done
fi

# ------------------------------------------------------------------ results back, comparison
for f in ict_regressor.json ict_regressor.pth training_curve.tsv; do [ -f "$W/$f" ] && cp "$W/$f" "$OUT/"; done
cp "$L/rule.out" "$OUT/rule.out" 2>/dev/null; cp "$L/rule.err" "$OUT/rule.err" 2>/dev/null
[ -f "$W/ict_regressor.pth" ] && say "ict_regressor.pth: $(stat -c %s "$W/ict_regressor.pth") bytes"
CDEV=$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')" 2>/dev/null || echo cpu)
CT=$(( 592 - $(el) )); [ "$CT" -gt 150 ] && CT=150; [ "$CT" -lt 5 ] && CT=5
say "=== comparison (at most $CT s)"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout "$CT" "$PY" "$B_DIR/compare.py" "$W" vox3d/data/ict_regressor.pth "$ICT" "$CDEV" > "$OUT/compare.txt" 2>&1
cat "$OUT/compare.txt"
read -r TOTAL NRUNS < <("$PY" -c "import json,sys; h=json.load(open(sys.argv[1])); print(round(sum(x['wall_s'] for x in h)), len(h))" "$RR/phases.json" 2>/dev/null || echo "? ?")
say "=== summary"
echo "machine: $(head -1 "$RR/gpu.txt"); $("$PY" -c 'import os; print(len(os.sched_getaffinity(0)))') cores; call $CALL"
[ -f "$RR/precheck.verdict" ] && sed -n 's/^ *//; /PRECHECK/p' "$RR/precheck.verdict"
"$PY" - "$RR/phases.json" <<'EOF' 2>/dev/null
import json, sys
h = json.load(open(sys.argv[1]))
tot = {k: 0.0 for k in ("render training cache (incl. start-up)", "render held-out", "train + evaluate + save",
                       "calibrate", "exit / after the last marker")}
for x in h:
    for k, v in x["phases"].items():
        tot[k] = tot.get(k, 0.0) + v
print("rule runs: " + ", ".join(f"{x['run']} {x['wall_s']:.0f} s (exit {x['rc']}{', ' + x['killed'].split(':')[0] if x['killed'] else ''})" for x in h))
print("per phase, summed: " + "; ".join(f"{k} {v:.0f} s" for k, v in tot.items()))
EOF
grep -E "^(state dict|\.pth files identical|training curve)|train_samples_valid|param_std|REPRODUCED|DIFFER|^identity_calibration|new vs committed" "$OUT/compare.txt"
[ -f "$RR/finished" ] || PROJECT=1 "$PY" "$B_DIR/state.py" "$W" "$RR" "$(( $(date +%s) + 540 ))" 2>/dev/null | grep '^projection'
if [ -f "$RR/finished" ]; then
  say "FINISHED in $TOTAL s (the rule's process wall time summed over $NRUNS run(s) in $CALL call(s); setup and precheck not counted)"
elif [ "$RC" = 3 ]; then
  say "NOT FINISHED ($TOTAL s of rule time so far, $NRUNS run(s) in $CALL call(s)): make the same call again NOW, on this warm machine"
else
  say "FAILED (exit $RC; see rule.err): $TOTAL s of rule time over $NRUNS run(s)"
fi
finish
