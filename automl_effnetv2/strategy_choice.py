"""Which tf.distribute strategy `--strategy=auto` means on a machine.

The decision is one pure function of three facts, so the trainer
(`train_lib.build_strategy`) and the launcher (`run_tpu_or_gpu.sh`, through
this module's command line) cannot disagree, and tests can state it:

  a TPU name given        -> tpu
  TF_CONFIG set           -> multi_worker_mirrored
  two or more GPUs        -> mirrored (over all of them)
  otherwise               -> one_device (the GPU if there is one, else the CPU)

TF_CONFIG wins over several local GPUs because it is only ever set on purpose,
to describe a multi-worker cluster; GPUs are merely present.

  python -m automl_effnetv2.strategy_choice --tpu=NAME --gpus=N

prints the choice, reading TF_CONFIG from the environment. This module does
not import TensorFlow, so the launcher's question costs no start-up time.
"""
import argparse
import os
from typing import Optional

STRATEGIES = ('auto', 'one_device', 'mirrored', 'multi_worker_mirrored', 'tpu')
# runtime.strategy values of upstream's main_tf2.py (default 'tpu'): 'gpus'
# mirrors over all GPUs, anything else but 'tpu' runs on one device.
UPSTREAM_STRATEGIES = {'gpus': 'mirrored', 'gpu': 'one_device', None: 'auto'}


def canonical_name(name: Optional[str]) -> Optional[str]:
  """A runtime.strategy value in this port's names (upstream's mapped)."""
  return UPSTREAM_STRATEGIES.get(name, name)


def choose_strategy(tpu: Optional[str], tf_config_set: bool,
                    num_gpus: int) -> str:
  """The strategy name `auto` resolves to, given the machine's facts."""
  if tpu:
    return 'tpu'
  if tf_config_set:
    return 'multi_worker_mirrored'
  if num_gpus >= 2:
    return 'mirrored'
  return 'one_device'


def main(argv=None):
  parser = argparse.ArgumentParser(
      description='Prints the tf.distribute strategy for this machine.')
  parser.add_argument('--tpu', default='', help='TPU name, if any.')
  parser.add_argument('--gpus', type=int, default=0,
                      help='Number of GPUs on this machine.')
  args = parser.parse_args(argv)
  print(choose_strategy(args.tpu, bool(os.environ.get('TF_CONFIG')),
                        args.gpus))


if __name__ == '__main__':
  main()
