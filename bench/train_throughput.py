"""Training images/s of this port against keras.applications' EfficientNetV2B0.

Both train the same architecture (EfficientNetV2-B0, 10 classes) on the same
synthetic batches, at the same batch and image size, in this process:
- ours: the Trainer's compiled multi-step loop (train step with label
  smoothing, L2, RMSProp, EMA), timed per call of `--steps_per_call` steps;
- keras: `model.fit` with RMSprop and categorical cross-entropy, timed per
  batch by a callback.
Throughput comes from the median step time, not from fit's wall time (tf.data
autotune adds stalls at the end of fit here); the two sides take turns in
several rounds so that this machine's drifts in speed hit both. Prints one
line per size and the ratio ours / keras.

  python bench/train_throughput.py --sizes=32,64,128 --batch=64

Both sides run under the same `--strategy` (train_lib.build_strategy's names;
one_device takes the first GPU if there is one, else the CPU) and the same
Keras precision policy (`--precision`), so on a GPU machine

  python bench/train_throughput.py --sizes=64,128,224 --batch=128 \
      --precision=mixed_float16 [--jit] [--strategy=mirrored]

measures the GPU path.
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_cli  # noqa: E402  pylint: disable=wrong-import-position
bench_cli.quiet_tensorflow_import()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from automl_effnetv2 import main as effnet_main  # noqa: E402
from automl_effnetv2 import train_lib  # noqa: E402
from automl_effnetv2 import utils  # noqa: E402


def synthetic(batch, size, classes=10):
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (batch, size, size, 3)).astype('float32')
  labels = np.eye(classes, dtype='float32')[rng.integers(0, classes, batch)]
  return images, labels


class Ours:
  """The Trainer's compiled loop on one repeated synthetic batch."""

  def __init__(self, size, batch, steps_per_call, jit, strategy, precision,
               composed_rmsprop=False, extra_hparams=''):
    config = effnet_main.build_config(
        'efficientnetv2-b0', 'cifar10ft',
        f'train.batch_size={batch},runtime.jit_compile={str(jit).lower()},'
        f'runtime.mixed_precision={precision}')
    config.override(extra_hparams)
    self.trainer = train_lib.Trainer(config, tempfile.mkdtemp(),
                                     strategy=strategy)
    # Keras' update of ~10 ops instead of TF1's kernel; set before tracing
    # (on the wrapped optimizer under float16 loss scaling).
    rmsprop = getattr(self.trainer.optimizer, 'inner_optimizer',
                      self.trainer.optimizer)
    rmsprop.fused = not composed_rmsprop
    images, labels = synthetic(batch, size)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    # As the Trainer feeds its own steps (distributed unless one CPU).
    self.iterator = iter(train_lib.distribute_dataset(
        self.trainer.strategy, lambda _: dataset))
    self.steps = steps_per_call
    self.step_times = []
    self._call()  # Trace and warm up.

  def _call(self):
    start = time.perf_counter()
    self.trainer.run_steps(self.iterator, self.steps)
    float(self.trainer.steps.loss_sum.result())  # Wait for the device.
    return (time.perf_counter() - start) / int(self.steps)

  def run(self, calls):
    self.step_times.extend(self._call() for _ in range(calls))


class _BatchTimer(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.times, self._start = [], None

  def on_train_batch_begin(self, batch, logs=None):
    self._start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter() - self._start)


class KerasFit:
  """keras.applications' EfficientNetV2B0 trained by model.fit."""

  def __init__(self, size, batch, strategy, precision):
    # The Trainer sets the global policy too; set it here first, so that
    # this side never inherits the other's from an earlier size.
    keras.mixed_precision.set_global_policy(precision)
    with strategy.scope():
      self.model = keras.applications.EfficientNetV2B0(
          weights=None, input_shape=(size, size, 3), classes=10,
          include_preprocessing=False)
      self.model.compile(
          optimizer=keras.optimizers.RMSprop(0.01, momentum=0.9),
          loss='categorical_crossentropy')
    images, labels = synthetic(batch, size)
    self.dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    self.step_times = []
    self.fit(3)  # Trace and warm up.

  def fit(self, steps):
    """One fit call of `steps` batches; returns each batch's seconds."""
    timer = _BatchTimer()
    self.model.fit(self.dataset, steps_per_epoch=steps, epochs=1, verbose=0,
                   callbacks=[timer])
    return timer.times

  def run(self, steps):
    # The first batch of each fit call carries fit's own start-up.
    self.step_times.extend(self.fit(steps + 1)[1:])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='32,64,128')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--rounds', type=int, default=4,
                      help='Alternating rounds of keras and ours.')
  parser.add_argument('--calls', type=int, default=4,
                      help='Calls of ours per round.')
  parser.add_argument('--steps_per_call', type=int, default=5)
  parser.add_argument('--jit', action='store_true', help='XLA for ours.')
  parser.add_argument('--composed_rmsprop', action='store_true',
                      help="Also time ours with Keras' composed RMSprop "
                      "update instead of TF1's fused kernel.")
  parser.add_argument('--tf_depthwise_grad', action='store_true',
                      help="Also time ours with TF's depthwise kernel "
                      'gradient on every map (model.small_map_depthwise_grad'
                      '=false).')
  parser.add_argument('--strategy', default='one_device',
                      choices=[s for s in train_lib.STRATEGIES if s != 'tpu'],
                      help='tf.distribute strategy for both sides.')
  parser.add_argument('--precision', default='float32',
                      choices=utils.PRECISION_POLICIES,
                      help='Keras precision policy for both sides.')
  args = parser.parse_args()
  strategy = train_lib.build_strategy(args.strategy)
  print(f'batch {args.batch}, tensorflow {tf.__version__}, '
        f'{os.cpu_count()} CPUs, {utils.detect_device_kind(strategy)} '
        f'{type(strategy).__name__} with {strategy.num_replicas_in_sync} '
        f'replica(s), {args.precision}, ours jit_compile={args.jit}, '
        f'{args.rounds} rounds of {args.calls * args.steps_per_call} steps '
        'each')
  for size in [int(s) for s in args.sizes.split(',')]:
    theirs = KerasFit(size, args.batch, strategy, args.precision)

    def ours_variant(**kwargs):
      return Ours(size, args.batch, args.steps_per_call, args.jit, strategy,
                  args.precision, **kwargs)

    variants = [('ours', ours_variant())]
    if args.composed_rmsprop:
      variants.append(('ours with composed RMSprop',
                       ours_variant(composed_rmsprop=True)))
    if args.tf_depthwise_grad:
      variants.append(("ours with TF's depthwise kernel gradient",
                       ours_variant(extra_hparams=(
                           'model.small_map_depthwise_grad=false'))))
    # Alternating rounds, so that drifts of this machine's speed (large
    # here, see docs/benchmarks.md) hit all sides alike.
    for _ in range(args.rounds):
      theirs.run(args.calls * args.steps_per_call)
      for _, variant in variants:
        variant.run(args.calls)
    theirs_s = float(np.median(theirs.step_times))
    lines = []
    for label, variant in variants:
      ours_s = float(np.median(variant.step_times))
      lines.append(f'{label} {args.batch / ours_s:7.1f} img/s, '
                   f'ratio {theirs_s / ours_s:.2f}x')
    print(f'{size:4d} px: keras fit {args.batch / theirs_s:7.1f} img/s; '
          + '; '.join(lines), flush=True)


if __name__ == '__main__':
  main()
