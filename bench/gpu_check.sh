#!/usr/bin/env bash
# One prepared command for a GPU box that can fetch nothing (the device machine: Python 3.12,
# torch 2.11+cu130, no ale-py/gymnasium/tensorboardX). Results go under $OUT (or --out DIR).
#
#   # here, once: the wheels it needs (4 MB), carried beside the checkout as .whl/
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#       ale-py==0.12.1 gymnasium==1.4.0 tensorboardX farama-notifications cloudpickle
#   # there:
#   bash bench/gpu_check.sh            # ~6 minutes
#   bash bench/gpu_check.sh --dry-run  # the same steps on the CPU in ~2 minutes (rehearsal)
#
# Measures: nvidia-smi; headless throughput of configs/space_invaders_gpu.toml (env only,
# network only, full loop); one process against 2 and 4 torchrun-style ranks sharing the GPU
# with the same total envs (bench/distributed.py).
set -u
cd "$(dirname "$0")/.."
DRY=0
OUT="${OUT:-gpu-results}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
  esac
  shift
done
mkdir -p "$OUT"
PY=python3
if [ -x .venv/bin/python ] && [ "$DRY" = 1 ]; then PY=.venv/bin/python; fi
if ! $PY -c "import ale_py, gymnasium, tensorboardX" 2>/dev/null; then
  $PY -m pip install -q --no-deps --no-index --find-links .whl ale-py gymnasium tensorboardX farama-notifications \
      cloudpickle >"$OUT/pip.txt" 2>&1 || { echo "wheels did not install: see $OUT/pip.txt"; exit 2; }
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; SECONDS_EACH=4; UPDATES=4; ROUNDS=1; RANKS="1 2"; SETS=(--set run.device=cpu --set env.num_envs=8)
  ENVS=8
else
  DEVICE=cuda; SECONDS_EACH=40; UPDATES=150; ROUNDS=3; RANKS="1 2 4"; SETS=(--set env.num_threads=0)
  ENVS=32
fi

{ nvidia-smi || echo "no nvidia-smi"; $PY -c "import torch, sys; print(sys.version); print('torch', torch.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"; nproc; } \
  >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

echo "== throughput (env only, network only, full loop) on $DEVICE"
timeout 200 $PY bench/throughput.py --config configs/space_invaders_gpu.toml "${SETS[@]}" --set run.device=$DEVICE \
  --skip-sb3 --seconds "$SECONDS_EACH" --rounds 2 --json "$OUT/throughput.json" >"$OUT/throughput.txt" 2>&1
echo "exit $?"; tail -5 "$OUT/throughput.txt"

echo "== one process vs ranks sharing the device: $RANKS"
timeout 260 $PY bench/distributed.py --config configs/space_invaders_gpu.toml "${SETS[@]}" --set run.device=$DEVICE \
  --ranks $RANKS --envs $ENVS --updates "$UPDATES" --rounds "$ROUNDS" --json "$OUT/distributed.json" \
  >"$OUT/distributed.txt" 2>&1
echo "exit $?"; tail -8 "$OUT/distributed.txt"
