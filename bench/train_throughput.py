"""Training images/s of this port against keras.applications' EfficientNetV2B0.

Both train the same architecture (EfficientNetV2-B0, 10 classes) on the same
synthetic batches, at the same batch and image size, in this process:
- ours: the Trainer's compiled multi-step loop (train step with label
  smoothing, L2, RMSProp, EMA), timed per call of `--steps_per_call` steps;
- keras: `model.fit` with RMSprop and categorical cross-entropy, timed per
  batch by a callback.
Throughput comes from the median step time, not from fit's wall time (tf.data
autotune adds stalls at the end of fit here). Prints one line per size and
the ratio ours / keras.

  python bench/train_throughput.py --sizes=32,64,128 --batch=64
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from automl_effnetv2 import main as effnet_main  # noqa: E402
from automl_effnetv2 import train_lib  # noqa: E402


def synthetic(batch, size, classes=10):
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (batch, size, size, 3)).astype('float32')
  labels = np.eye(classes, dtype='float32')[rng.integers(0, classes, batch)]
  return images, labels


def ours_step_seconds(size, batch, calls, steps_per_call, jit):
  config = effnet_main.build_config(
      'efficientnetv2-b0', 'cifar10ft',
      f'train.batch_size={batch},runtime.jit_compile={str(jit).lower()},'
      'runtime.mixed_precision=false')
  trainer = train_lib.Trainer(config, tempfile.mkdtemp(),
                              strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
  images, labels = synthetic(batch, size)
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  iterator = iter(trainer.strategy.experimental_distribute_dataset(dataset))
  steps = tf.constant(steps_per_call, tf.int64)
  trainer._train_loop(iterator, steps)  # pylint: disable=protected-access
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    trainer._train_loop(iterator, steps)  # pylint: disable=protected-access
    float(trainer.loss_sum.result())  # Wait for the device.
    times.append((time.perf_counter() - start) / steps_per_call)
  return float(np.median(times))


class _BatchTimer(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.times, self._start = [], None

  def on_train_batch_begin(self, batch, logs=None):
    self._start = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    self.times.append(time.perf_counter() - self._start)


def keras_step_seconds(size, batch, steps):
  model = keras.applications.EfficientNetV2B0(
      weights=None, input_shape=(size, size, 3), classes=10,
      include_preprocessing=False)
  model.compile(optimizer=keras.optimizers.RMSprop(0.01, momentum=0.9),
                loss='categorical_crossentropy')
  images, labels = synthetic(batch, size)
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  timer = _BatchTimer()
  model.fit(dataset, steps_per_epoch=steps + 3, epochs=1, verbose=0,
            callbacks=[timer])
  return float(np.median(timer.times[3:]))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='32,64,128')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--calls', type=int, default=8)
  parser.add_argument('--steps_per_call', type=int, default=5)
  parser.add_argument('--jit', action='store_true', help='XLA for ours.')
  args = parser.parse_args()
  print(f'batch {args.batch}, tensorflow {tf.__version__}, '
        f'{os.cpu_count()} CPUs, ours jit_compile={args.jit}')
  for size in [int(s) for s in args.sizes.split(',')]:
    steps = args.calls * args.steps_per_call
    theirs = keras_step_seconds(size, args.batch, steps)
    ours = ours_step_seconds(size, args.batch, args.calls, args.steps_per_call,
                             args.jit)
    print(f'{size:4d} px: ours {args.batch / ours:7.1f} img/s, keras fit '
          f'{args.batch / theirs:7.1f} img/s, ratio {theirs / ours:.2f}x',
          flush=True)


if __name__ == '__main__':
  main()
