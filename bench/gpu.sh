#!/usr/bin/env bash
# The one prepared command for a GPU box (the device machine: Python 3.12, torch 2.11+cu130,
# 16 cores, no ale-py/gymnasium/tensorboardX, no network). Run it first thing whenever such a
# box is in reach; it ends within --minutes (default 8) whatever happens, and everything it
# learns is under --out (default $OUT, else gpu-results/), written as it goes:
#   machine.txt     nvidia-smi, CPU, Python, torch, compilers
#   results.jsonl   one JSON line per figure (bench/gpu_bench.py), summary.md the same as a table:
#                   env only (16/32/64/128 envs, every core), network only (the trainer's loop
#                   on fixed frames; fp32 and bf16 x 16/32/64/128 envs = batches 80..640),
#                   full loop on configs/space_invaders_gpu.toml and its variants; with each
#                   trainer figure the ms per update spent acting, waiting for the emulators,
#                   updating, in ALE's send, and the rest
#   run/            metrics.jsonl and config.toml of a SpaceInvaders run on the preset for the
#                   minutes left (checkpoints stay on the box)
#   logs/           each stage's output; stages.txt: each stage's exit code and seconds
#
#   # here, once: the wheels the box lacks (4 MB), carried beside the checkout as .whl/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       ale-py==0.12.1 gymnasium==1.4.0 tensorboardX farama-notifications cloudpickle protobuf
#   # there (the wheels are installed with --no-deps on the box's own torch and numpy):
#   bash bench/gpu.sh
#   # here, a rehearsal of every stage on the CPU with small sizes (4 minutes at most):
#   bash bench/gpu.sh --dry-run          # PYTHON=... picks the interpreter (default .venv/bin/python)
set -u
cd "$(dirname "$0")/.."
DRY=0
MINUTES=""
OUT="${OUT:-gpu-results}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    --minutes) MINUTES="$2"; shift ;;
    *) echo "usage: bash bench/gpu.sh [--dry-run] [--out DIR] [--minutes M]"; exit 2 ;;
  esac
  shift
done
if [ "$DRY" = 1 ]; then MINUTES="${MINUTES:-4}"; else MINUTES="${MINUTES:-8}"; fi
# The guard: every stage gets at most what is left before the deadline, less what the
# training run at the end is promised; 20 s stay for the stop, the copy and the summary.
DEADLINE=$((SECONDS + MINUTES * 60 - 20))
left() { echo $((DEADLINE - SECONDS)); }
mkdir -p "$OUT/logs" "$OUT/run"
OUT="$(cd "$OUT" && pwd)"
RESULTS="$OUT/results.jsonl"
PY="${PYTHON:-python3}"
if [ -z "${PYTHON:-}" ] && [ "$DRY" = 1 ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore

if ! $PY -c "import ale_py, gymnasium, tensorboardX" 2>/dev/null; then
  # protobuf (tensorboardX imports it) only where the box has none: its own may serve others
  WHEELS="ale-py gymnasium tensorboardX farama-notifications cloudpickle"
  $PY -c "import google.protobuf" 2>/dev/null || WHEELS="$WHEELS protobuf"
  timeout 120 $PY -m pip install -q --no-deps --no-index --find-links .whl $WHEELS >"$OUT/logs/pip.txt" 2>&1 \
    || { echo "wheels did not install: see $OUT/logs/pip.txt"; exit 2; }
  $PY -c "import ale_py, gymnasium, tensorboardX" >>"$OUT/logs/pip.txt" 2>&1 \
    || { echo "the carried wheels installed but do not import: see $OUT/logs/pip.txt"; exit 2; }
fi

if [ "$DRY" = 1 ]; then
  SETS=(--set run.device=cpu --set env.num_threads=0 --set run.torch_threads=0 --set env.num_envs=8
        --set run.log_every=2)
  SIZES="4 8"; ENVS_MORE=16; WINDOW=1; WARMUP=0.5; CAP=30; COMPILE_CAP=30; RESERVE=25
else
  SETS=(--set env.num_threads=0)
  SIZES="16 32 64 128"; ENVS_MORE=64; WINDOW=6; WARMUP=2; CAP=45; COMPILE_CAP=90; RESERVE=120
fi

# stage NAME CAP COMMAND...: run it for at most CAP seconds and never into the reserve.
CACHES="$(mktemp -d)"
stage() {
  local name="$1" cap="$2"; shift 2
  local budget=$(( $(left) - RESERVE ))
  [ "$budget" -gt "$cap" ] && budget="$cap"
  if [ "$budget" -lt 10 ]; then
    echo "$name skipped: no time left" | tee -a "$OUT/stages.txt"
    return
  fi
  local start=$SECONDS
  # A compile its guard cut short can leave a truncated kernel in inductor's cache, which a later
  # stage compiling the same kernel would load ("file too short"): a cache of its own per stage
  TORCHINDUCTOR_CACHE_DIR="$CACHES/$name" timeout -k 5 "$budget" "$@" >"$OUT/logs/$name.txt" 2>&1
  local rc=$?
  echo "$name exit $rc$([ $rc = 124 ] && echo ' (cut at '$budget' s)') in $((SECONDS - start)) s" | tee -a "$OUT/stages.txt"
}

{ timeout 20 nvidia-smi || echo "no nvidia-smi"
  timeout 20 nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv 2>/dev/null
  nproc; lscpu 2>/dev/null | grep -E "Model name|^CPU\(s\)|Thread|NUMA node\(s\)"; free -g | head -2
  echo "compilers: $(command -v gcc cc g++ | tr '\n' ' ')"
  timeout 60 $PY -c "import sys, torch, numpy; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''); print('numpy', numpy.__version__)
try:
    import triton; print('triton', triton.__version__)
except ImportError: print('no triton')"
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

BENCH=($PY bench/gpu_bench.py --out "$RESULTS" "${SETS[@]}")
HALF=$(( WINDOW / 2 + 1 ))
stage env "$((2 * CAP))" "${BENCH[@]}" env --sizes $SIZES --seconds "$HALF"
stage net-fp32 "$((2 * CAP))" "${BENCH[@]}" net --name fp32 --sizes $SIZES --seconds "$HALF" --warmup "$WARMUP" --bare
stage net-bf16 "$((2 * CAP))" "${BENCH[@]}" net --name bf16 --sizes $SIZES --seconds "$HALF" --warmup "$WARMUP" \
  --set run.precision=bf16
# The preset as it is (auto: overlap on with >= 8 cores, TF32 on, no compiling), then one change
# at a time, most telling first: a variant the guard has no time for is skipped.
loop() { local name="$1" cap="$2"; shift 2
  stage "loop-$name" "$cap" "${BENCH[@]}" loop --name "$name" --seconds "$WINDOW" --warmup "$WARMUP" "$@"; }
loop preset "$CAP"
loop overlap-off "$CAP" --set env.overlap=off
loop compile-act "$COMPILE_CAP" --set run.compile=act
loop envs-$ENVS_MORE "$CAP" --set env.num_envs=$ENVS_MORE
loop bf16 "$CAP" --set run.precision=bf16
loop envs-$ENVS_MORE-overlap-off "$CAP" --set env.num_envs=$ENVS_MORE --set env.overlap=off
loop tf32-off "$CAP" --set run.tf32=off
loop compile-all "$COMPILE_CAP" --set run.compile=all

# The run on the preset, for what is left; SIGTERM stops it with a checkpoint.
RUNS="$(mktemp -d)"
RUN_SECONDS=$(( $(left) ))
if [ "$RUN_SECONDS" -ge 15 ]; then
  start=$SECONDS
  timeout -k 15 -s TERM "$RUN_SECONDS" $PY -m a2c_tui train --headless --config configs/space_invaders_gpu.toml \
    "${SETS[@]}" --set run.out_dir="$RUNS" --set run.name=gpu-preset >"$OUT/logs/run.txt" 2>&1
  rc=$?
  echo "run exit $rc$([ $rc = 124 ] && echo ' (stopped at the deadline)') in $((SECONDS - start)) s" | tee -a "$OUT/stages.txt"
  for f in "$RUNS"/*/metrics.jsonl "$RUNS"/*/config.toml; do [ -f "$f" ] && cp "$f" "$OUT/run/"; done
  tail -n 1 "$OUT/run/metrics.jsonl" 2>/dev/null
else
  echo "run skipped: no time left" | tee -a "$OUT/stages.txt"
fi
rm -rf "$RUNS" "$CACHES"
{ $PY bench/gpu_bench.py summary --out "$RESULTS"; echo; echo "stages:"; sed 's/^/    /' "$OUT/stages.txt"; } \
  >"$OUT/summary.md" 2>&1
cat "$OUT/summary.md"
echo "done in $SECONDS s; results under $OUT"
# A stage that failed (not cut by its guard) fails the script, after everything else has run:
# the rehearsal must not pass with a stage that would fail on the device
failed=$(grep -E "^[^ ]+ exit [0-9]+" "$OUT/stages.txt" | grep -Ev "^[^ ]+ exit (0|124)( |$)" | cut -d' ' -f1 | tr '\n' ' ')
if [ -n "$failed" ]; then
  echo "failed: ${failed}(their output: $OUT/logs)"
  exit 1
fi
