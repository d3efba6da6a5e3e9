#!/usr/bin/env bash
# One short GPU session, prepared to run unattended inside a fixed device budget:
#   1. benchmarks/gpu.py: training-step speed and memory of every bundle network (float32 / bfloat16);
#   2. benchmarks/mrbrains18_unlearning.py at the paper's size (--size full: the challenge's spacing, MedicalNet's
#      448 x 448 x 56 whole volume, Med3D ResNet-50), distinct arm, whole regime, one seed, bfloat16 autocast:
#      original, exact retraining, the noise floor's second retraining, then Noisy Label / SalUn / flip noise.
# Each step has its own time limit, so a slow machine still returns what finished; the models' JSON records are
# packed at the end (the .pt files stay behind). Results go to $OUT (default benchmarks/work/gpu_session).
#
#   OUT=/tmp/out bash benchmarks/gpu_session.sh
#   PYTHON=.venv/bin/python GPU_ARGS="--cpu --cases tissuemnist --steps 1 --warmup 1" MRB_ARGS="--size cpu \
#     --train_epochs 1 --horizons 1 --methods noisy_label_fresh" bash benchmarks/gpu_session.sh   # a CPU rehearsal
set -u
out=${OUT:-benchmarks/work/gpu_session}
mkdir -p "$out" && out=$(cd "$out" && pwd)
python=${PYTHON:-python3}
work=${MRB_WORK:-/tmp/mrbrains18_full}
gpu_seconds=${GPU_SECONDS:-120}
mrb_seconds=${MRB_SECONDS:-380}
gpu_args=${GPU_ARGS:---steps 10 --warmup 3}
mrb_args=${MRB_ARGS:---size full --train_epochs 20 --horizons 20 --methods noisy_label_fresh,salun,noisy_label_flip}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

{ date -u; nvidia-smi 2>&1 | head -15; "$python" -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)"; } \
  >"$out/machine.txt" 2>&1

# The synthetic subjects are written on the CPU while gpu.py holds the GPU.
mrb_common="--amp --arms distinct --regimes whole --seeds ${MRB_SEEDS:-0} --work_dir $work"
# shellcheck disable=SC2086  # the argument strings are word-split on purpose
"$python" benchmarks/mrbrains18_unlearning.py $mrb_args $mrb_common --data_only >"$out/mrbrains18_data.log" 2>&1 &
data_writer=$!
# shellcheck disable=SC2086
timeout "$gpu_seconds" "$python" benchmarks/gpu.py $gpu_args --results_dir "$out" >"$out/gpu.log" 2>&1
echo "gpu.py exit $?" >>"$out/machine.txt"

wait "$data_writer"
echo "subjects written, exit $? at $(date -u +%T)" >>"$out/machine.txt"
# shellcheck disable=SC2086
timeout "$mrb_seconds" "$python" benchmarks/mrbrains18_unlearning.py $mrb_args $mrb_common --results_dir "$out" --name mrbrains18_unlearning_full >"$out/mrbrains18.log" 2>&1
echo "mrbrains18_unlearning.py exit $? at $(date -u +%T)" >>"$out/machine.txt"

# The per-model records (seconds, evaluation, certificate), readable after a timeout; logs compressed.
if [ -d "$work" ]; then
  (cd "$work" && find . -path '*/models/*.json' -print0 | tar czf "$out/mrbrains18_records.tgz" --null -T -)
fi
cat "$out/mrbrains18_data.log" >>"$out/mrbrains18.log" && rm "$out/mrbrains18_data.log"
gzip -f "$out/gpu.log" "$out/mrbrains18.log"
rm -f "$out"/.*.lock  # at most 8 files come back from the device
