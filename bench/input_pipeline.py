"""Fashion-MNIST training-pipeline images/s next to the model's training images/s.

For each size: the train pipeline (resize, flip, RandAugment N=2 M=10 by
default, mixup 0.1) is drained for `--batches` batches after a warm-up and
timed; the model's training throughput is the median step time of the
Trainer's compiled loop on synthetic batches of the same size
(bench/train_throughput.py). The ratio pipeline / model should be >= 5 for
the pipeline not to be the bottleneck. Measured one after the other, so each
gets both cores.

  python bench/input_pipeline.py --sizes=32,64,128 --batch=64
  python bench/input_pipeline.py --sizes=64 --batch=128 --ra_num_layers=1 \
      --aug_fill=0 --ra_ops='Rotate|ShearX|ShearY|TranslateX|TranslateY|Cutout' \
      --skip_model
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_cli  # noqa: E402  pylint: disable=wrong-import-position
bench_cli.quiet_tensorflow_import()

import tensorflow as tf  # noqa: E402

from automl_effnetv2 import augment_spec  # noqa: E402
from automl_effnetv2 import datasets  # noqa: E402
from automl_effnetv2 import hparams  # noqa: E402
from automl_effnetv2 import local_data  # noqa: E402

import train_throughput  # noqa: E402  pylint: disable=g-import-not-at-top


def pipeline_images_per_second(size, batch, batches, tfds_dir, augment,
                               threadpool):
  inp = datasets.FashionMNISTInput(
      is_training=True, image_size=size, augment=augment, mixup_alpha=0.1,
      tfds_data_dir=tfds_dir, cache=True)
  ds = inp.dataset(batch)
  if threadpool:
    options = tf.data.Options()
    options.threading.private_threadpool_size = threadpool
    ds = ds.with_options(options)
  iterator = iter(ds)
  for _ in range(20):  # Warm-up: fills the cache and the prefetch buffer.
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='32,64,128')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--batches', type=int, default=100)
  parser.add_argument('--augname', default='ft_randaug')
  parser.add_argument('--ra_num_layers', type=int, default=2)
  parser.add_argument('--ra_ops', default=None,
                      help="RandAugment ops, '|'-separated (default: all 16).")
  parser.add_argument('--aug_fill', type=int, default=None,
                      help='fill value for uncovered pixels (default: gray).')
  parser.add_argument('--threadpool', type=int, default=0,
                      help='tf.data private threadpool size (0: default).')
  parser.add_argument('--skip_model', action='store_true')
  args = parser.parse_args()
  tfds_dir = tempfile.mkdtemp()
  local_data.prepare_fashion_mnist(local_data.default_fashion_mnist_dir(),
                                   tfds_dir)
  # Read as --hparam_str reads data.ra_ops.
  ra_ops = hparams.parse_value(args.ra_ops) if args.ra_ops else None
  print(f'batch {args.batch}, augname {args.augname}, RandAugment N='
        f'{args.ra_num_layers} ops {ra_ops or "all"} fill {args.aug_fill}, '
        f'{os.cpu_count()} CPUs')
  augment = augment_spec.AugmentSpec(
      policy=args.augname, num_layers=args.ra_num_layers, magnitude=10,
      ops=ra_ops, translate_const=8, cutout_const=8, fill=args.aug_fill)
  for size in [int(s) for s in args.sizes.split(',')]:
    pipeline = pipeline_images_per_second(size, args.batch, args.batches,
                                          tfds_dir, augment, args.threadpool)
    line = f'{size:4d} px: pipeline {pipeline:8.1f} img/s'
    if not args.skip_model:
      model = args.batch / train_throughput.ours_step_seconds(
          size, args.batch, calls=5, steps_per_call=5, jit=False)
      line += f', model training {model:7.1f} img/s, ratio {pipeline / model:.1f}x'
    print(line, flush=True)


if __name__ == '__main__':
  main()
