"""What the parts of our training step cost, against Keras' fit step.

Times the Trainer's loop (as bench/train_throughput.py does) with upstream's
full step and with parts switched off by config, and keras.applications'
EfficientNetV2B0 under `fit`, all in one process, taking turns in rounds.
The variants change what is trained; they exist only to locate the time.

  python bench/train_step_parts.py --size=64
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cli  # noqa: E402  pylint: disable=wrong-import-position
bench_cli.quiet_tensorflow_import()

import numpy as np  # noqa: E402

import train_throughput  # noqa: E402

VARIANTS = {
    'full step': '',
    'without EMA and L2': 'train.ema_decay=0,train.weight_decay=0',
    'also without stochastic depth, dropout, label smoothing':
        'train.ema_decay=0,train.weight_decay=0,model.survival_prob=None,'
        'model.dropout_rate=0,train.label_smoothing=0',
}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=6)
  args = parser.parse_args()
  ours = {name: train_throughput.Ours(args.size, args.batch, 5, False,
                                      extra_hparams=extra)
          for name, extra in VARIANTS.items()}
  keras_fit = train_throughput.KerasFit(args.size, args.batch)
  for _ in range(args.rounds):
    keras_fit.run(20)
    for variant in ours.values():
      variant.run(4)
  keras_s = float(np.median(keras_fit.step_times))
  print(f'{args.size} px, batch {args.batch}: keras fit '
        f'{args.batch / keras_s:.1f} img/s')
  for name, variant in ours.items():
    step_s = float(np.median(variant.step_times))
    print(f'  ours, {name}: {args.batch / step_s:.1f} img/s, '
          f'ratio {keras_s / step_s:.2f}x')


if __name__ == '__main__':
  main()
