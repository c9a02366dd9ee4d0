r"""Times the same training work under whichever TensorFlow runs this file.

  python bench/tf_runtime_speed.py --output runs/tf_2.21.json
  ~/automl-venv/bin/python bench/tf_runtime_speed.py --output runs/tf_2.15.json

Run it with two interpreters (this project's, and the TensorFlow 2.15
environment of `patches/upstream-requirements.txt`) on one machine, in
turns, to tell whether a speed difference between upstream's code and the
port comes from the TensorFlow release or from the code that runs on it.
It uses nothing of either code base: keras.applications' EfficientNetV2-B0
(10 classes, random weights; Keras 2 under TF 2.15, Keras 3 under 2.16+)
trained by a plain `tf.function` step (softmax cross-entropy, SGD), and
single ops in B0's shapes at 64 px, forward and gradient, each inside a
`tf.function`. Medians of several timed calls after warm-up calls.
"""
import json
import statistics
import sys
import time

import bench_cli  # pylint: disable=wrong-import-position
bench_cli.quiet_tensorflow_import()
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

# (name, input shape NHWC, kernel size, output channels or None for
# depthwise, stride): convolutions shaped like B0's at 64 px, batch 128.
OPS = (
    ('stem conv 3x3/2', (128, 64, 64, 3), 3, 32, 2),
    ('fused-MBConv conv 3x3', (128, 32, 32, 16), 3, 64, 2),
    ('MBConv expand 1x1', (128, 8, 8, 64), 1, 256, 1),
    ('MBConv depthwise 3x3', (128, 8, 8, 256), 3, None, 1),
    ('MBConv depthwise 3x3, 4x4 map', (128, 4, 4, 672), 3, None, 1),
    ('head conv 1x1', (128, 2, 2, 192), 1, 1280, 1),
)


def median_seconds(function, calls, warmup):
  for _ in range(warmup):
    function()
  times = []
  for _ in range(calls):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def model_step_seconds(size, batch, calls, warmup):
  keras = tf.keras
  model = keras.applications.EfficientNetV2B0(
      weights=None, input_shape=(size, size, 3), classes=10,
      classifier_activation=None)
  images = tf.random.uniform((batch, size, size, 3), 0, 255)
  labels = tf.one_hot(tf.range(batch) % 10, 10)
  variables = model.trainable_variables

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_mean(
          tf.nn.softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, variables)
    for variable, grad in zip(variables, grads):
      variable.assign_sub(1e-3 * grad)
    return loss

  return median_seconds(lambda: step().numpy(), calls, warmup)


def op_seconds(shape, kernel, channels, stride, calls, warmup):
  x = tf.Variable(tf.random.normal(shape))
  if channels is None:
    w = tf.Variable(tf.random.normal((kernel, kernel, shape[-1], 1)))
    forward = lambda: tf.nn.depthwise_conv2d(
        x, w, [1, stride, stride, 1], 'SAME')
  else:
    w = tf.Variable(tf.random.normal((kernel, kernel, shape[-1], channels)))
    forward = lambda: tf.nn.conv2d(x, w, stride, 'SAME')

  @tf.function
  def forward_and_gradient():
    with tf.GradientTape() as tape:
      y = tf.reduce_sum(forward())
    return tape.gradient(y, [x, w])

  return median_seconds(lambda: [g.numpy() for g in forward_and_gradient()],
                        calls, warmup)


def keras_version():
  import keras  # pylint: disable=g-import-not-at-top
  return keras.__version__


def main(argv=None):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--output', required=True, help='JSON file to write')
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--batch', type=int, default=128,
                      help="the model step's batch (the ops' is 128)")
  parser.add_argument('--calls', type=int, default=8)
  parser.add_argument('--warmup', type=int, default=3)
  args = parser.parse_args(argv)
  if args.size < 32 or args.batch < 1 or args.calls < 1:
    bench_cli.fail(__file__, '--size must be 32 or more, --batch and '
                   '--calls 1 or more.')
  result = {
      'tensorflow': tf.__version__,
      'keras': keras_version(),
      'size': args.size, 'batch': args.batch,
      'model_step_seconds': model_step_seconds(args.size, args.batch,
                                               args.calls, args.warmup),
      'op_seconds': {name: op_seconds(shape, kernel, channels, stride,
                                      args.calls, args.warmup)
                     for name, shape, kernel, channels, stride in OPS},
  }
  print(json.dumps(result, indent=1))
  with open(args.output, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
