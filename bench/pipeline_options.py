"""End-to-end training throughput under tf.data autotune vs fixed parallelism.

The Trainer trains EfficientNetV2-B0 on the real Fashion-MNIST pipeline of the
`fashion_mnist` config (ft_randaug, mixup) at one image size, feeding from
pipelines that differ only in `data.parallel_calls`: 'auto' (tf.data's
autotuner picks map parallelism and prefetch depth: upstream's choice) or a
fixed number of parallel calls with two batches prefetched and the autotuner
off. The variants run in turns (A B A B ...) on one model, so slow drift of
the machine hits them alike. Per variant it prints the median step time and
the wall time of all timed steps (what an epoch costs), and the wall-time
ratio against the first variant.

  python bench/pipeline_options.py --size=32 --variants=auto,2,1
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_cli  # noqa: E402  pylint: disable=wrong-import-position
bench_cli.quiet_tensorflow_import()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from automl_effnetv2 import hparams  # noqa: E402
from automl_effnetv2 import local_data  # noqa: E402
from automl_effnetv2 import main as effnet_main  # noqa: E402
from automl_effnetv2 import train_lib  # noqa: E402


def parse_variant(text):
  return None if text == 'auto' else int(text)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--variants', default='auto,2',
                      help="comma list of 'auto' or a number of parallel "
                      'calls; the first is the reference')
  parser.add_argument('--rounds', type=int, default=3,
                      help='turns per variant')
  parser.add_argument('--calls', type=int, default=4,
                      help='timed loop calls per turn')
  parser.add_argument('--steps_per_call', type=int, default=25)
  args = parser.parse_args()

  variants = args.variants.split(',')
  tfds_dir = tempfile.mkdtemp()
  local_data.prepare_fashion_mnist(local_data.default_fashion_mnist_dir(),
                                   tfds_dir)
  config = effnet_main.build_config(
      'efficientnetv2-b0', 'fashion_mnist',
      f'train.batch_size={args.batch},train.stages=1,train.isize={args.size},'
      f'data.tfds_data_dir={tfds_dir}')
  trainer = train_lib.Trainer(
      config, tempfile.mkdtemp(),
      strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
  stage = trainer.plan.stages[0]
  iterators = {}
  for name in variants:
    variant = hparams.Config(config.as_dict())
    variant.data.parallel_calls = parse_variant(name)
    iterators[name] = trainer.stage_iterator(stage, 0, variant)
    for _ in range(2):  # Warm-up: traces, fills caches and buffers.
      trainer.run_steps(iterators[name], args.steps_per_call)
      float(trainer.steps.loss_sum.result())

  step_times = {name: [] for name in variants}
  wall = {name: 0.0 for name in variants}
  for _ in range(args.rounds):
    for name in variants:
      for _ in range(args.calls):
        start = time.perf_counter()
        trainer.run_steps(iterators[name], args.steps_per_call)
        float(trainer.steps.loss_sum.result())  # Wait for the device.
        seconds = time.perf_counter() - start
        wall[name] += seconds
        step_times[name].append(seconds / args.steps_per_call)

  timed_steps = args.rounds * args.calls * args.steps_per_call
  print(f'{args.size} px, batch {args.batch}, {timed_steps} timed steps per '
        f'variant, {os.cpu_count()} CPUs')
  reference = wall[variants[0]]
  for name in variants:
    median = float(np.median(step_times[name]))
    label = 'autotune' if name == 'auto' else f'{name} parallel calls'
    print(f'{label:>18}: median step {median * 1000:6.1f} ms '
          f'({args.batch / median:6.1f} img/s), wall {wall[name]:6.1f} s '
          f'({timed_steps * args.batch / wall[name]:6.1f} img/s), wall / '
          f'{variants[0]} {wall[name] / reference:.3f}', flush=True)


if __name__ == '__main__':
  main()
