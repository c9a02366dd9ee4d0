#!/usr/bin/env bash
# Runs automl_effnetv2/main.py under the tf.distribute strategy that fits the
# machine, passing every argument through:
#   --tpu=NAME given (or TPU_NAME set)  -> TPUStrategy
#   TF_CONFIG set                       -> MultiWorkerMirroredStrategy
#   two or more GPUs                    -> MirroredStrategy over all of them
#   one GPU                             -> OneDeviceStrategy on it
#   otherwise                           -> the CPU
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

extra=()
if [ -n "$tpu" ]; then
  strategy=tpu
  case " $* " in *" --tpu="*) ;; *) extra+=("--tpu=$tpu") ;; esac
elif [ -n "${TF_CONFIG:-}" ]; then
  strategy=multi_worker_mirrored
elif [ "$gpus" -ge 2 ]; then
  strategy=mirrored
else
  strategy=one_device  # One GPU if TensorFlow sees one, else the CPU.
fi
echo "run_tpu_or_gpu.sh: strategy=$strategy (GPUs: $gpus)" >&2
cd "$here"
exec "$python" -m automl_effnetv2.main --strategy="$strategy" ${extra[@]+"${extra[@]}"} "$@"
