#!/usr/bin/env bash
# Runs automl_effnetv2/main.py under the tf.distribute strategy that fits the
# machine, passing every argument through. The choice (TPU, TF_CONFIG
# cluster, several GPUs, one GPU or the CPU) is automl_effnetv2/
# strategy_choice.py's; this script only gathers the facts it needs.
# Example: ./run_tpu_or_gpu.sh --mode=train --dataset_cfg=fashion_mnist \
#            --model_dir=runs/fm
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
[ -x "$here/.venv/bin/python" ] && python="${PYTHON:-$here/.venv/bin/python}"

tpu="${TPU_NAME:-}"
for arg in "$@"; do
  case "$arg" in --tpu=*) tpu="${arg#--tpu=}" ;; esac
done

gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi --list-gpus 2>/dev/null | grep -c '^GPU' || true)
fi

cd "$here"
strategy="$("$python" -m automl_effnetv2.strategy_choice --tpu="$tpu" \
            --gpus="$gpus")"
extra=()
if [ "$strategy" = tpu ]; then
  case " $* " in *" --tpu="*) ;; *) extra+=("--tpu=$tpu") ;; esac
fi
echo "run_tpu_or_gpu.sh: strategy=$strategy (GPUs: $gpus)" >&2
exec "$python" -m automl_effnetv2.main --strategy="$strategy" ${extra[@]+"${extra[@]}"} "$@"
