#!/usr/bin/env bash
# One command for a GPU machine that has CUDA, nvcc, PyTorch and CuPy but no pycuda, no TensorRT and no network:
#
#   benchmarks/gpu_run.sh [--dry-run] [--wheels DIR] [--budget SECONDS]
#
# 1. env      what the machine is (GPU, driver, CUDA, torch)
# 2. install  edgead's runtime needs and pycuda from local files in --wheels (default .whl/): wheels, and pycuda's
#             sdist built here against the local CUDA when no pycuda wheel is given (docs/performance.md says which
#             files and how to download them with pip on a machine that reaches PyPI)
# 3. tests    the GPU tests (pytest -m gpu): the real CudaOps through pycuda against edgead.ops, k from 1 to 1024
#             with ties and duplicates, a detector end to end with CUDA geometry, context handling across threads
# 4. kernels  benchmarks/gpu_kernels.py: exactness and CUDA-event timings of every kernel, eager network timings
# 5. data     one synthetic category (edgead synth)
# 6. template, dusnet, r3dad: train (the networks with their `paper` presets on the GPU, each under a fixed time
#             budget) and evaluate on that category, so the run also says whether the paper setting beats the
#             template (issue 17)
#
# Every step has its own time limit inside --budget (default 510 s, for a 9-minute slot with start-up to spare) and
# is recorded as ok / failed / timeout / skipped; a failed step never stops the ones after it. Figures go to $OUT
# (a temporary folder if unset): gpu_run.json (the summary), gpu_run.log, env.txt, gpu_kernels.json and
# eval_{template,dusnet,r3dad}.json.
#
# --dry-run (CI runs it on the CPU, so the script cannot rot): nothing is installed, the GPU tests and kernel rows
# report themselves skipped, and the training steps run tiny presets for a few steps on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
WHEELS=.whl
BUDGET=510
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --wheels) WHEELS=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    *) echo "usage: $0 [--dry-run] [--wheels DIR] [--budget SECONDS]" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$(mktemp -d /tmp/edgead-gpu-run.XXXXXX)}
WORK=$(mktemp -d /tmp/edgead-gpu-work.XXXXXX)
mkdir -p "$OUT"
LOG=$OUT/gpu_run.log
STEPS=$WORK/steps.jsonl
: > "$LOG"
: > "$STEPS"
export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
START=$(date +%s)

record() {  # name status seconds detail
  printf '{"step": "%s", "status": "%s", "seconds": %s, "detail": "%s"}\n' "$1" "$2" "$3" "$4" >> "$STEPS"
  echo "== $1: $2 (${3} s) $4" | tee -a "$LOG"
}

step() {  # step NAME LIMIT_SECONDS COMMAND...: run under what is left of the budget
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 20 ]; then
    record "$name" skipped 0 "budget spent"
    return
  fi
  [ "$limit" -gt $((left - 10)) ] && limit=$((left - 10))
  echo "== $name (limit ${limit} s): $*" >> "$LOG"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  local dt=$(($(date +%s) - t0))
  case $rc in
    0) record "$name" ok "$dt" "" ;;
    124|137) record "$name" timeout "$dt" "over ${limit} s" ;;
    *) record "$name" failed "$dt" "exit $rc" ;;
  esac
}

skip() { record "$1" skipped 0 "$2"; }

# 1. env
{
  date -u
  $PY -c "import platform, sys; print('python', sys.version.split()[0], platform.machine())"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>&1
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  command -v nvcc >/dev/null && nvcc --version | tail -1
  nproc
} > "$OUT/env.txt" 2>&1
record env ok 0 ""

if [ $DRY = 1 ]; then
  DEVICE=cpu; POINTS=3000; N_TEST=2; DUS=(--preset tiny --steps 3); R3D=(--preset cpu --steps 2); TRAIN_S=120
  skip install "dry run: the CPU environment has the packages"
else
  DEVICE=cuda; POINTS=12000; N_TEST=10; DUS=(--preset paper --time-budget 90); R3D=(--preset paper --time-budget 60)
  TRAIN_S=300
  # 2. install: into a private site folder that goes first on PYTHONPATH; pycuda from its wheel, else its sdist
  SITE=$WORK/site
  install() {
    set -e
    $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$WHEELS"/*.whl
    for sdist in "$WHEELS"/python_lzf-*.tar.gz; do
      [ -e "$sdist" ] && $PY -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" "$sdist"
    done
    if ! ls "$WHEELS"/pycuda-*.whl >/dev/null 2>&1; then  # build pycuda here, against this machine's CUDA
      local cuda_root libcuda
      cuda_root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
      libcuda=$(ldconfig -p | awk '/libcuda.so.1 /{print $NF; exit}')
      mkdir -p "$WORK/cudalib" "$WORK/pycuda"
      ln -sf "$libcuda" "$WORK/cudalib/libcuda.so"
      tar xzf "$WHEELS"/pycuda-*.tar.gz -C "$WORK/pycuda" --strip-components=1
      (cd "$WORK/pycuda" && $PY configure.py --cuda-root="$cuda_root" --cudadrv-lib-dir="$WORK/cudalib" \
         --no-cuda-enable-curand && $PY -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheel" .)
      $PY -m pip install -q --no-index --no-deps --target "$SITE" "$WORK"/wheel/pycuda-*.whl
    fi
  }
  export -f install
  export PY WHEELS WORK SITE
  step install 200 bash -c install
  export PYTHONPATH=$SITE:$PYTHONPATH
fi

# 3. the GPU tests (skipped with their reasons where there is no GPU)
step tests 150 $PY -m pytest -q -p no:cacheprovider -rs -m gpu tests/test_kernels.py tests/test_runtime.py

# 4. kernel exactness and timings
if [ $DRY = 1 ]; then
  step kernels 60 env OUT="$OUT" $PY benchmarks/gpu_kernels.py --dry-run
else
  step kernels 90 env OUT="$OUT" $PY benchmarks/gpu_kernels.py
fi

# 5. data: one category
DATA=$WORK/data
step data 60 $PY -m edgead synth --out "$DATA" --categories hex_bolt --points "$POINTS" --train 4 \
  --good "$N_TEST" --defective "$N_TEST" --workers "$(nproc)"

# 6. train and evaluate: template (baseline), DUS-Net and R3D-AD
step template 60 bash -c "$PY -m edgead train template --data $DATA/hex_bolt --out $WORK/template && \
  $PY -m edgead eval $WORK/template --data $DATA --json $OUT/eval_template.json"
step dusnet "$TRAIN_S" bash -c "$PY -m edgead train dusnet ${DUS[*]} --device $DEVICE --no-progress \
  --data $DATA/hex_bolt --out $WORK/dusnet && \
  $PY -m edgead eval $WORK/dusnet --device $DEVICE --data $DATA --json $OUT/eval_dusnet.json"
step r3dad "$TRAIN_S" bash -c "$PY -m edgead train r3dad ${R3D[*]} --device $DEVICE --no-progress \
  --data $DATA/hex_bolt --out $WORK/r3dad && \
  $PY -m edgead eval $WORK/r3dad --device $DEVICE --data $DATA --json $OUT/eval_r3dad.json"

# the summary: steps, test counts, kernel exactness, and the three detectors side by side
$PY - "$STEPS" "$OUT" "$WORK" "$DRY" <<'EOF'
import json, re, sys
from pathlib import Path

steps_file, out, work, dry = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"
steps = [json.loads(line) for line in steps_file.read_text().splitlines()]
log = (out / "gpu_run.log").read_text()
summary = {"dry_run": dry, "steps": steps, "env": (out / "env.txt").read_text().splitlines()}
tests = re.findall(r"^=* ?(\d+ (?:passed|failed|skipped|errors?|deselected).*) in [\d.]+s", log, re.M)
summary["tests"] = tests[-1] if tests else None
kernels = out / "gpu_kernels.json"
if kernels.exists():
    k = json.loads(kernels.read_text())
    summary["kernels_all_exact"] = k.get("all_exact")
    summary["kernels_ran"] = sum(r["status"] == "ran" for r in k.get("rows", []))
for kind in ("template", "dusnet", "r3dad"):
    f = out / f"eval_{kind}.json"
    run = work / kind / "model.json"
    if f.exists():
        rep = json.loads(f.read_text())
        summary[kind] = {**rep["mean"], "ms_per_frame": rep["timing_ms"].get("total", {}).get("median")}
        if run.exists():
            summary[kind]["train"] = {k: v for k, v in json.loads(run.read_text())["train"].items() if k != "config"}
(out / "gpu_run.json").write_text(json.dumps(summary, indent=2))
print(json.dumps({k: v for k, v in summary.items() if k not in ("env", "steps")}, indent=1))
failed = [s["step"] for s in steps if s["status"] in ("failed", "timeout")]
print("steps not ok:", failed or "none")
sys.exit(1 if failed else 0)
EOF
rc=$?
echo "figures in $OUT ($(($(date +%s) - START)) s)"
rm -rf "$WORK"
exit $rc  # non-zero when a step failed or timed out (CI's dry run must not rot)
