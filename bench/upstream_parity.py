r"""Checks the port against upstream's own code, piece by piece, on one input.

  python bench/upstream_parity.py \
      --automl ~/automl/efficientnetv2 --legacy_python ~/automl-venv/bin/python \
      --output upstream_parity.json

`--automl` is upstream's `efficientnetv2/` folder (google/automl, with the
study's Fashion-MNIST config, e.g. as `patches/patchset.py upstream` leaves
it; the checkout's root works too) and `--legacy_python` the interpreter of
an environment where upstream imports (TensorFlow 2.15, tensorflow-addons,
`patches/upstream-requirements.txt`); it defaults to $LEGACY_PYTHON. This
script runs in the port's environment, writes the shared inputs (a real
Fashion-MNIST training image, a random batch, a value sequence) to a
temporary folder, runs itself under `--legacy_python` with `--side=upstream`
(that side imports only numpy, TensorFlow and upstream's modules, in graph
mode as upstream's main.py runs), and compares, for the `fashion_mnist`
recipe (B0, batch 128, 60,000 images, cosine, 1 warm-up epoch, EMA 0.999):

  lr         every step's learning rate of a run of `--epochs` (default 2)
             and a sample of steps of 31 epochs: upstream's
             `utils.WarmupLearningRateSchedule` called as main.py's model_fn
             calls it, against `objective.Objective.learning_rate`. Upstream's
             model_fn passes the float `epochs * steps_per_epoch` as
             total_steps, the port the whole number of steps (a documented
             deviation): the schedules are compared with the port given
             upstream's float too (must agree), and as each side builds them
             (reported, expected to differ at the end of the cosine).
  ema        upstream's `tf.compat.v1.train.ExponentialMovingAverage` wired
             as main.py wires it (variable updates, then
             `optimizer.minimize(..., global_step)`, then `ema.apply` under a
             control dependency) against `utils.ExponentialMovingAverage`
             applied as the port's trainer applies it, on the same values;
             and the variables each side averages (`utils.get_ema_vars` vs
             `utils.ema_source_variables`) on B0 with 10 classes.
  bn         B0 built on both sides: count, momentum and epsilon of every
             batch-norm layer; upstream's random weights saved as a
             checkpoint and loaded into the port by name
             (`pretrained.load_pretrained`); one training-mode forward pass
             on the same batch (upstream running `model.updates` as its
             main.py does): logits and every moving mean and variance. For
             scale, the same step through Keras 3's own BN
             (`model.fused_bn=false`, biased variance) is shown too.
  grad       the gradients of the label-smoothed cross-entropy with
             respect to every trainable variable, upstream's random B0
             weights on both sides, one random batch at each of the
             recipe's training sizes (48, 56 and 64 px), training mode.
  aug        each of upstream's 16 RandAugment ops (`NAME_TO_FUNC`, argument
             mapping `level_to_arg` with cutout 40, translate 100, fill 128)
             at magnitudes 5, 7.5 and 10 on one image at each of the
             recipe's training sizes (48, 56 and 64 px), against the
             port's `autoaugment.make_op`. The random parts are fixed on both
             sides: rotate, shear and translate run with each sign (upstream's
             `_randomly_negate_tensor` pinned to it, the port given a seed
             that draws it); cutout at the centre the port's seed draws
             (upstream's `tf.random_uniform` pinned to it). The image is a
             Fashion-MNIST training image as upstream's `ft` path hands it
             to RandAugment (gray to RGB, [-1, 1], resized, back to
             uint8). Contrast and Sharpness differ by design (deviations
             "Contrast op", "Sharpness op"); both also run with
             `enhance_pixels='upstream'` (`data.enhance_pixels=upstream`),
             which must then agree.
  eval       eval preprocessing at 64 px of raw 28x28 training images
             (gray repeated to RGB): upstream's `preprocess_image` as its
             FashionMNISTInput calls it (`ft_randaug`: scale to [-1, 1],
             resize) and, for comparison, the default path (`randaug`:
             centre crop, resize).

Both sides run in float32 (upstream's main.py would pick float16 for
`runtime.mixed_precision=True` off TPU; the port uses float32 on CPU).
Prints one table and, with `--output`, writes every number as JSON. Exit
status 1 when a difference not listed as expected exceeds its tolerance, 2
for bad flags.
"""
import argparse
import contextlib
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import bench_cli

MODEL = 'efficientnetv2-b0'
DATASET_CFG = 'fashion_mnist'
MAGNITUDES = (5.0, 7.5, 10.0)
STAGE_SIZES = (48, 56, 64)  # the recipe's training sizes, stage by stage
# Upstream's RandAugment constants (autoaugment.distort_image_with_randaugment).
RA_CUTOUT_CONST, RA_TRANSLATE_CONST, RA_FILL = 40, 100, 128
ENHANCE_OPS = ('Color', 'Contrast', 'Brightness', 'Sharpness')
SIGNED_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
# Port deviations that change an op's pixels (docs/deviations.md, "Fixes of
# plain bugs"); data.enhance_pixels=upstream restores upstream's for both.
EXPECTED_OP_DIFFERENCES = {
    'Contrast': 'deviation "Contrast op": blends towards the mean gray level '
                '(upstream: pixel_count / 256)',
    'Sharpness': 'deviation "Sharpness op": rounds the smoothed image '
                 '(upstream truncates)',
}
LONG_EPOCHS = 31  # the recipe's length, checked at a sample of steps
LONG_SAMPLES = 300
EMA_STEPS = 2000
EMA_WIDTH = 6
BN_BATCH = 8
BN_SIZE = 64
EVAL_SIZE = 64
EVAL_IMAGES = 4
# Tolerances. LR: absolute difference relative to the peak rate (per-step
# relative differences are reported: near the end of the cosine 1 + cos(x)
# cancels, and the one-ulp differences between TF 2.15's and TF 2.21's
# float32 arithmetic grow there to a few 1e-5 of a rate of ~1e-5). EMA:
# relative. Pixels: exact. Eval floats: absolute (a float32 ulp at 1.0 is
# 1.2e-7). BN: moving statistics absolute (means and variances are O(1) or
# smaller on a unit-normal batch), logits relative to their largest; the two
# TF builds' convolutions may sum in different orders.
LR_RTOL = 1e-6
EMA_RTOL = 1e-6
EVAL_ATOL = 1e-6
BN_STEM_ATOL = 1e-6
BN_STATS_ATOL = 1e-5
BN_LOGITS_RTOL = 1e-4
# Gradients: per variable, |port - upstream| / |upstream| (L2 norms). Some
# variables' gradients are zero in exact arithmetic (the shift of a batch
# norm whose every path leads into another training-mode batch norm) and
# round-off there: a variable's scale is at least GRAD_FLOOR of the largest
# variable gradient norm.
GRAD_BATCH = 16
GRAD_RTOL = 1e-3
GRAD_FLOOR = 1e-4

TRAIN_IMAGES_FILE = 'train-images-idx3-ubyte.gz'


def _fail(message):
  bench_cli.fail(__file__, message)


def parse_args(argv):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--automl', required=True,
                      help="upstream's efficientnetv2/ folder (or the "
                      'google/automl checkout holding it)')
  parser.add_argument('--legacy_python',
                      default=os.environ.get('LEGACY_PYTHON'),
                      help="python of upstream's environment (TF 2.15); "
                      'default $LEGACY_PYTHON')
  parser.add_argument('--data_dir', default=None,
                      help='folder with Fashion-MNIST IDX files (default: '
                      "the port's default, Debian's dataset-fashion-mnist)")
  parser.add_argument('--image_index', type=int, default=0,
                      help='training image used for the augmentation ops')
  parser.add_argument('--epochs', type=int, default=2,
                      help='run length whose every step the LR check covers')
  parser.add_argument('--output', help='write the results as JSON here')
  parser.add_argument('--keep', help='keep the exchanged files in this folder')
  parser.add_argument('--side', choices=('port', 'upstream'), default='port',
                      help=argparse.SUPPRESS)
  parser.add_argument('--work', help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def upstream_folder(path):
  """The efficientnetv2/ folder at or under `path`, or None."""
  path = os.path.abspath(os.path.expanduser(path))
  for folder in (path, os.path.join(path, 'efficientnetv2')):
    if all(os.path.isfile(os.path.join(folder, name)) for name in
           ('main.py', 'utils.py', 'autoaugment.py', 'effnetv2_model.py',
            'preprocessing.py', 'datasets.py')):
      return folder
  return None


# ============================================================================
# Upstream side: runs under --legacy_python. numpy, TensorFlow and upstream's
# modules only; nothing from the port.
# ============================================================================
def _released_names(variables):
  """{checkpoint name: variable} with the names of upstream's released
  checkpoints, which the port's loader reads: Keras under a graph names the
  top dense layer's scope head_1 (its Head layer took head)."""
  return {(n.replace('/head_1/', '/head/')
           if n.replace('/head_1/', '/head/') not in variables else n): v
          for n, v in variables.items()}


@contextlib.contextmanager
def _patched(owner, name, value):
  saved = getattr(owner, name)
  setattr(owner, name, value)
  try:
    yield
  finally:
    setattr(owner, name, saved)


def upstream_side(automl, work):
  import copy
  import numpy as np
  sys.path.insert(0, automl)
  import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel
  tf.disable_eager_execution()  # as upstream's main.py
  import autoaugment  # pylint: disable=import-outside-toplevel
  import datasets
  import effnetv2_configs
  import effnetv2_model
  import hparams
  import preprocessing
  import utils

  with open(os.path.join(work, 'request.json')) as f:
    request = json.load(f)
  session_config = tf.ConfigProto(intra_op_parallelism_threads=1,
                                  inter_op_parallelism_threads=1)
  out, meta = {}, {}

  # main.py's config: base -> model -> dataset.
  config = copy.deepcopy(hparams.base_config)
  config.override(effnetv2_configs.get_model_config(MODEL))
  config.override(datasets.get_dataset_config(DATASET_CFG))
  config.model.num_classes = config.data.num_classes
  train = config.train
  num_images = config.data.splits[train.split or 'train'].num_images
  meta['config'] = dict(
      batch_size=train.batch_size, num_images=num_images,
      lr_base=train.lr_base, lr_sched=train.lr_sched,
      lr_warmup_epoch=train.lr_warmup_epoch,
      lr_decay_epoch=train.lr_decay_epoch,
      lr_decay_factor=train.lr_decay_factor, lr_min=train.lr_min,
      ema_decay=train.ema_decay, min_steps=train.min_steps,
      bn_momentum=config.model.bn_momentum,
      bn_epsilon=config.model.bn_epsilon, bn_type=config.model.bn_type,
      dropout_rate=config.model.dropout_rate,
      survival_prob=config.model.survival_prob)

  # -- learning rate: model_fn's call, with params from main() ---------------
  steps_per_epoch = num_images / train.batch_size
  for run in request['lr_runs']:
    total_steps = max(train.min_steps, run['epochs'] * steps_per_epoch)
    with tf.Graph().as_default():
      step = tf.placeholder(tf.int64, [])  # the global step's dtype
      scaled_lr = train.lr_base * (train.batch_size / 256.0)
      scaled_lr_min = train.lr_min * (train.batch_size / 256.0)
      lr = utils.WarmupLearningRateSchedule(
          scaled_lr, steps_per_epoch=steps_per_epoch,
          decay_epochs=train.lr_decay_epoch,
          warmup_epochs=train.lr_warmup_epoch,
          decay_factor=train.lr_decay_factor, lr_decay_type=train.lr_sched,
          total_steps=total_steps, minimal_lr=scaled_lr_min)(step)
      with tf.Session(config=session_config) as sess:
        values = [sess.run(lr, {step: s}) for s in run['steps']]
    out[f'lr_{run["epochs"]}'] = np.asarray(values, np.float32)
    meta[f'lr_{run["epochs"]}_total_steps'] = total_steps

  # -- EMA as model_fn wires it -------------------------------------------
  values = np.load(os.path.join(work, 'ema_values.npy'))
  with tf.Graph().as_default():
    global_step = tf.train.get_or_create_global_step()
    var = tf.get_variable('var', initializer=tf.constant(values[0]))
    dummy = tf.get_variable('dummy', initializer=tf.constant(1.0))
    feed = tf.placeholder(tf.float32, values.shape[1:])
    # The fed value plays a BN update op: train_op depends on it.
    update_ops = [tf.assign(var, feed)]
    ema = tf.train.ExponentialMovingAverage(decay=train.ema_decay,
                                            num_updates=global_step)
    optimizer = utils.build_optimizer(0.0, optimizer_name=train.optimizer)
    with tf.control_dependencies(update_ops):
      train_op = optimizer.minimize(tf.square(dummy), global_step,
                                    var_list=[dummy])
    with tf.control_dependencies([train_op]):
      train_op = ema.apply([var, dummy])
    shadow = ema.average(var)
    with tf.Session(config=session_config) as sess:
      sess.run(tf.global_variables_initializer())
      shadows, steps = [], []
      for value in values[1:]:
        sess.run(train_op, {feed: value})
        shadows.append(sess.run(shadow))
        steps.append(sess.run(global_step))
  out['ema_shadows'] = np.stack(shadows)
  out['ema_steps'] = np.asarray(steps)

  # -- B0: batch-norm layers, EMA variables, one training step ---------------
  batch = np.load(os.path.join(work, 'bn_batch.npy'))
  with tf.Graph().as_default():
    tf.set_random_seed(1)
    tf.keras.backend.set_learning_phase(True)
    images = tf.placeholder(tf.float32, batch.shape)
    model = effnetv2_model.EffNetV2Model(config.model.model_name, config.model)
    logits = model(images, training=True)
    updates = list(model.updates)
    ema_vars = utils.get_ema_vars()
    # Upstream's BN classes subclass TF2's Keras layer, which compat.v1's
    # tf.keras does not name: found by their attributes.
    layers = [m for m in model.submodules
              if all(hasattr(m, a) for a in ('moving_mean', 'momentum',
                                             'epsilon'))]
    meta['bn_layers'] = [
        dict(name=l.name, cls=type(l).__name__, momentum=float(l.momentum),
             epsilon=float(l.epsilon), fused=l.fused) for l in layers]
    meta['bn_update_ops'] = len(updates)
    meta['ema_vars'] = _kinds(
        [(v.op.name, v.shape.num_elements(), v in tf.trainable_variables())
         for v in ema_vars])
    stats = [v for v in tf.global_variables()
             if v.op.name.endswith(('moving_mean', 'moving_variance'))]
    names = {v.op.name: v for v in tf.global_variables()}
    saved = _released_names(names)
    meta['renamed_for_checkpoint'] = sorted(
        n for n, v in names.items() if saved.get(n) is not v)
    saver = tf.train.Saver(saved)
    with tf.Session(config=session_config) as sess:
      sess.run(tf.global_variables_initializer())
      saver.save(sess, os.path.join(work, 'upstream_b0', 'model'))
      before = sess.run(stats)
      result = sess.run([logits] + updates, {images: batch})
      after = sess.run(stats)
  out['bn_logits'] = result[0]
  meta['bn_stat_names'] = [v.op.name for v in stats]
  meta['bn_stats_changed'] = int(sum(
      not np.array_equal(a, b) for a, b in zip(before, after)))
  for v, value in zip(stats, after):
    out['bn_stat/' + v.op.name] = value

  # -- gradients at each training size, the same weights -------------------
  labels = np.load(os.path.join(work, 'grad_labels.npy'))
  for size in STAGE_SIZES:
    batch = np.load(os.path.join(work, f'grad_batch_{size}.npy'))
    with tf.Graph().as_default():
      tf.keras.backend.set_learning_phase(True)
      model = effnetv2_model.EffNetV2Model(config.model.model_name,
                                           config.model)
      logits = model(tf.constant(batch), training=True)
      xent = tf.losses.softmax_cross_entropy(
          onehot_labels=tf.constant(labels), logits=logits,
          label_smoothing=config.train.label_smoothing)
      trainable = tf.trainable_variables()
      grads = tf.gradients(xent, trainable)
      released = _released_names({v.op.name: v
                                  for v in tf.global_variables()})
      with tf.Session(config=session_config) as sess:
        tf.train.Saver(released).restore(
            sess, os.path.join(work, 'upstream_b0', 'model'))
        values = sess.run([xent] + grads)
    out[f'grad{size}_xent'] = np.asarray(values[0])
    for v, value in zip(trainable, values[1:]):
      out[f'grad{size}/' + v.op.name.replace('/head_1/', '/head/')] = value

  # -- RandAugment ops with their random parts pinned ------------------------
  images = {size: np.load(os.path.join(work, f'aug_image_{size}.npy'))
            for size in STAGE_SIZES}
  params = hparams.Config(cutout_const=RA_CUTOUT_CONST,
                          translate_const=RA_TRANSLATE_CONST)
  meta['aug_errors'] = {}
  meta['aug_args'] = {}
  with tf.Graph().as_default(), tf.Session(config=session_config) as sess:
    inputs = {size: tf.placeholder(tf.uint8, image.shape)
              for size, image in images.items()}
    for case in request['aug_cases']:
      x, image = inputs[case['size']], images[case['size']]
      sign, centre = case.get('sign', 1), case.get('centre')
      centres = list(centre or [])

      def pinned_uniform(*args, **kwargs):  # cutout's centre: height, width
        del args, kwargs
        return tf.constant(centres.pop(0), tf.int32)

      try:
        with _patched(autoaugment, '_randomly_negate_tensor',
                      lambda t: t if sign > 0 else -t), \
             _patched(tf, 'random_uniform', pinned_uniform):
          func, _, args = autoaugment._parse_policy_info(  # pylint: disable=protected-access
              case['op'], 0.5, float(case['level']), [RA_FILL] * 3, params)
          y = func(x, *args)
        meta['aug_args'][case['key']] = repr(args)
        out['aug/' + case['key']] = sess.run(y, {x: image})
      except Exception as e:  # pylint: disable=broad-except
        meta['aug_errors'][case['key']] = f'{type(e).__name__}: {e}'[:300]

  # -- eval preprocessing as FashionMNISTInput -> CIFAR10Input call it -------
  raw = np.load(os.path.join(work, 'eval_images.npy'))
  with tf.Graph().as_default(), tf.Session(config=session_config) as sess:
    x = tf.placeholder(tf.uint8, raw.shape[1:])
    rgb = tf.image.grayscale_to_rgb(x)
    for augname in request['eval_augnames']:
      y = preprocessing.preprocess_image(
          rgb, image_size=EVAL_SIZE, is_training=False, image_dtype=None,
          augname=augname, ra_num_layers=config.data.ra_num_layers,
          ra_magnitude=config.data.ram)
      out['eval/' + augname] = np.stack([sess.run(y, {x: r}) for r in raw])

  np.savez(os.path.join(work, 'upstream.npz'), **out)
  with open(os.path.join(work, 'upstream.json'), 'w') as f:
    json.dump(meta, f, indent=1, default=str)


def _kinds(entries):
  """Counts (variables, elements) per kind: trainable, moving mean/variance."""
  kinds = {}
  for name, size, trainable in entries:
    if name.endswith('moving_mean'):
      kind = 'moving_mean'
    elif name.endswith('moving_variance'):
      kind = 'moving_variance'
    else:
      kind = 'trainable' if trainable else 'other'
    count = kinds.setdefault(kind, [0, 0])
    count[0] += 1
    count[1] += int(size)
  return {k: {'variables': v[0], 'elements': v[1]}
          for k, v in sorted(kinds.items())}


# ============================================================================
# Port side: the inputs, the port's results, the comparison.
# ============================================================================
def read_idx_images(path, count):
  import numpy as np
  with gzip.open(path, 'rb') as f:
    header = f.read(16)
    magic, num, rows, cols = (int.from_bytes(header[i:i + 4], 'big')
                              for i in range(0, 16, 4))
    if magic != 2051:
      raise ValueError(f'{path}: not an IDX image file')
    count = min(count, num)
    data = f.read(count * rows * cols)
  return np.frombuffer(data, np.uint8).reshape(count, rows, cols, 1)


def to_rgb_at(gray, size, tf):
  """A 28x28x1 uint8 image as upstream's ft training path hands it to
  RandAugment: gray repeated to RGB, scaled to [-1, 1], resized to `size`,
  back to uint8."""
  image = tf.image.grayscale_to_rgb(tf.constant(gray))
  image = (tf.cast(image, tf.float32) / 255.0 - 0.5) / 0.5
  image = tf.image.resize(image, [size, size])
  image = (image * 0.5 + 0.5) * 255
  return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8).numpy()


def seed_for_sign(autoaugment, tf, sign):
  for i in range(100):
    seed = tf.constant([7, i], tf.int32)
    if float(autoaugment._random_sign(1.0, seed)) * sign > 0:  # pylint: disable=protected-access
      return [7, i]
  raise RuntimeError('no seed found')


def port_cutout_centre(autoaugment, tf, seed, size):
  """The centre the port's cutout draws from `seed` (its own draw)."""
  seed_y, seed_x = autoaugment.split_seed(tf.constant(seed, tf.int32), 2)
  return [int(tf.random.stateless_uniform([], s, 0, size, tf.int32))
          for s in (seed_y, seed_x)]


def run_port_side(args, work, data_file):
  import keras
  import numpy as np
  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(1)
  tf.config.threading.set_inter_op_parallelism_threads(1)
  from automl_effnetv2 import augment_spec
  from automl_effnetv2 import autoaugment
  from automl_effnetv2 import effnetv2_model
  from automl_effnetv2 import preprocessing
  from automl_effnetv2 import progressive
  from automl_effnetv2 import run_config
  from automl_effnetv2 import objective
  from automl_effnetv2 import utils

  config = run_config.build_config(MODEL, DATASET_CFG)
  train = config.train
  num_images = config.data.splits[train.split or 'train'].num_images
  res, meta = {}, {}

  # -- shared inputs -------------------------------------------------------
  grays = read_idx_images(data_file, max(EVAL_IMAGES, args.image_index + 1))
  aug_images = {size: to_rgb_at(grays[args.image_index], size, tf)
                for size in STAGE_SIZES}
  for size, image in aug_images.items():
    np.save(os.path.join(work, f'aug_image_{size}.npy'), image)
  np.save(os.path.join(work, 'eval_images.npy'), grays[:EVAL_IMAGES])
  rng = np.random.default_rng(0)
  np.save(os.path.join(work, 'bn_batch.npy'),
          rng.standard_normal((BN_BATCH, BN_SIZE, BN_SIZE, 3), np.float32))
  for size in STAGE_SIZES:
    np.save(os.path.join(work, f'grad_batch_{size}.npy'),
            rng.uniform(-1, 1, (GRAD_BATCH, size, size, 3)).astype(np.float32))
  np.save(os.path.join(work, 'grad_labels.npy'), np.eye(
      config.data.num_classes, dtype=np.float32)[
          rng.integers(0, config.data.num_classes, GRAD_BATCH)])
  k = np.arange(EMA_STEPS + 1, dtype=np.float64)[:, None]
  i = np.arange(EMA_WIDTH, dtype=np.float64)[None, :]
  ema_values = (np.sin(0.37 * k + i) * (1.0 + 1e-3 * k) + 0.1 * i +
                0.05 * np.cos(0.011 * k * (i + 1))).astype(np.float32)
  np.save(os.path.join(work, 'ema_values.npy'), ema_values)

  # -- learning rate: the trainer's own method on the trainer's numbers ------
  steps_per_epoch = num_images / train.batch_size
  lr_runs = []
  for epochs in (args.epochs, LONG_EPOCHS):
    total = progressive.train_steps(epochs, num_images, train.batch_size,
                                    train.min_steps)
    if epochs == args.epochs:
      steps = list(range(total))
    else:
      warmup = int(train.lr_warmup_epoch * steps_per_epoch)
      steps = sorted(set(
          [int(round(x)) for x in np.linspace(0, total - 1, LONG_SAMPLES)] +
          [0, 1, warmup - 1, warmup, warmup + 1, total - 2, total - 1]))
    lr_runs.append(dict(epochs=epochs, steps=steps, total_steps=total))
    if epochs == args.epochs == LONG_EPOCHS:
      break
  for run in lr_runs:
    sched = lambda total, run=run: objective.Objective(
        config, tf.constant(run['steps'], tf.int64),
        _PlanNumbers(steps_per_epoch, total)).learning_rate().numpy()
    res[f'lr_{run["epochs"]}'] = sched(run['total_steps'])
    # With upstream's float total_steps (epochs * steps_per_epoch).
    res[f'lr_{run["epochs"]}_float_total'] = sched(
        max(train.min_steps, run['epochs'] * steps_per_epoch))

  # -- EMA as the trainer applies it ----------------------------------------
  for name, after_increment in (('ema_shadows', True),
                                ('ema_shadows_step_before', False)):
    var = tf.Variable(ema_values[0])
    global_step = tf.Variable(0, dtype=tf.int64)
    ema = utils.ExponentialMovingAverage([var], train.ema_decay)
    shadows = []
    for value in ema_values[1:]:
      var.assign(value)  # the optimizer's update
      if after_increment:  # _train_step: apply, increment, then ema.apply
        global_step.assign_add(1)
        ema.apply(global_step)
      else:
        ema.apply(global_step)
        global_step.assign_add(1)
      shadows.append(ema.shadows[0].numpy())
    res[name] = np.stack(shadows)

  # -- augmentation ops: the port's make_op, seeds picked for sign/centre ----
  cases = []
  sign_seeds = {s: seed_for_sign(autoaugment, tf, s) for s in (1, -1)}
  cutout_seed = [11, 3]
  meta['cutout_centre'] = {}
  for size, image in aug_images.items():
    centre = port_cutout_centre(autoaugment, tf, cutout_seed, size)
    meta['cutout_centre'][size] = centre
    x = tf.constant(image)
    for op in autoaugment.RANDAUGMENT_OPS:
      for level in MAGNITUDES:
        signs = (1, -1) if op in SIGNED_OPS else (None,)
        for sign in signs:
          key = f'{size}px {op}@{level:g}' + (
              '' if sign is None else ('+' if sign > 0 else '-'))
          case = dict(key=key, op=op, level=level, size=size)
          seed = [0, 0]
          if sign is not None:
            case['sign'] = sign
            seed = sign_seeds[sign]
          if op == 'Cutout':
            case['centre'] = centre
            seed = cutout_seed
          fn = autoaugment.make_op(op, level, RA_TRANSLATE_CONST,
                                   RA_CUTOUT_CONST, replace=(RA_FILL,) * 3)
          res['aug/' + key] = fn(x, tf.constant(seed, tf.int32)).numpy()
          if op in EXPECTED_OP_DIFFERENCES:
            like_upstream = autoaugment.make_op(
                op, level, RA_TRANSLATE_CONST, RA_CUTOUT_CONST,
                replace=(RA_FILL,) * 3, enhance_pixels='upstream')
            res['aug_upstream_pixels/' + key] = like_upstream(
                x, tf.constant(seed, tf.int32)).numpy()
          cases.append(case)

  # -- eval preprocessing -----------------------------------------------------
  eval_augnames = [config.data.augname, 'randaug']
  for augname in eval_augnames:
    spec = augment_spec.AugmentSpec(policy=augname,
                                    num_layers=config.data.ra_num_layers,
                                    magnitude=config.data.ram)
    res['eval/' + augname] = np.stack([
        preprocessing.preprocess_image(tf.constant(g), EVAL_SIZE, False,
                                       augment=spec).numpy()
        for g in grays[:EVAL_IMAGES]])

  with open(os.path.join(work, 'request.json'), 'w') as f:
    json.dump(dict(lr_runs=lr_runs, aug_cases=cases,
                   eval_augnames=eval_augnames), f)

  # -- upstream ---------------------------------------------------------------
  started = time.time()
  proc = subprocess.run(
      [args.legacy_python, os.path.abspath(__file__), '--side=upstream',
       '--automl', args.automl, '--work', work],
      capture_output=True, text=True, check=False)
  meta['upstream_seconds'] = round(time.time() - started, 1)
  if proc.returncode != 0:
    tail = '\n'.join(proc.stderr.strip().splitlines()[-15:])
    print(f'the upstream side failed (exit {proc.returncode}):\n{tail}',
          file=sys.stderr)
    sys.exit(1)
  up = dict(np.load(os.path.join(work, 'upstream.npz')))
  with open(os.path.join(work, 'upstream.json')) as f:
    up_meta = json.load(f)

  # -- B0 on the port's side, with upstream's initial weights ---------------
  model_config = config.model.as_dict()
  model_config['num_classes'] = config.data.num_classes
  model_config['bn_type'] = effnetv2_model.bn_type_for(
      model_config['bn_type'], False)
  model = effnetv2_model.EffNetV2Model(None, model_config)
  batch = np.load(os.path.join(work, 'bn_batch.npy'))
  model(tf.constant(batch[:1]), training=False)
  from automl_effnetv2 import pretrained
  meta['bn_load'] = pretrained.load_pretrained(
      model, os.path.join(work, 'upstream_b0'), use_ema=False)[0]
  source = pretrained.read_weights(os.path.join(work, 'upstream_b0'))
  plan = pretrained.plan_loading(model, source, use_ema=False)
  stat_keys = [(v, key) for v, key in plan.assign
               if utils.variable_path(v).endswith(
                   ('moving_mean', 'moving_variance'))]
  res['bn_logits'] = model(tf.constant(batch), training=True).numpy()
  for v, key in stat_keys:
    res['bn_stat/' + key] = v.numpy()
  # Gradients through the port's model and loss, on the same weights (the
  # training step above moved only the moving statistics).
  loss = objective.Objective(config, tf.Variable(0, dtype=tf.int64),
                             progressive.run_plan(config))
  labels = tf.constant(np.load(os.path.join(work, 'grad_labels.npy')))
  keys = {id(v): key for v, key in plan.assign}
  for size in STAGE_SIZES:
    images = tf.constant(np.load(os.path.join(work,
                                              f'grad_batch_{size}.npy')))
    with tf.GradientTape() as tape:
      xent = tf.reduce_mean(loss.per_example_loss(
          labels, model(images, training=True)))
    grads = tape.gradient(xent, model.trainable_variables)
    res[f'grad{size}_xent'] = xent.numpy()
    for v, g in zip(model.trainable_variables, grads):
      res[f'grad{size}/' + keys[id(v)]] = g.numpy()
  bn_layers = [l for l in model.layers
               if isinstance(l, keras.layers.BatchNormalization)]
  meta['bn_layers'] = [dict(name=l.name, cls=type(l).__name__,
                            momentum=float(l.momentum),
                            epsilon=float(l.epsilon)) for l in bn_layers]
  meta['ema_vars'] = _kinds(
      [(utils.variable_path(v), int(np.prod(v.shape)),
        any(v is t for t in model.trainable_weights))
       for v in utils.ema_source_variables(model)])
  meta['stem_stat_keys'] = [key for _, key in stat_keys
                            if '/stem/' in key]
  # The same step through Keras 3's own BN (model.fused_bn=false), whose
  # moving variance takes the biased batch variance: shows what a real
  # difference in the update rule looks like at this tolerance.
  model_config['fused_bn'] = False
  keras_bn = effnetv2_model.EffNetV2Model(None, model_config)
  keras_bn(tf.constant(batch[:1]), training=False)
  pretrained.load_pretrained(keras_bn, os.path.join(work, 'upstream_b0'),
                             use_ema=False)
  keras_bn(tf.constant(batch), training=True)
  plan = pretrained.plan_loading(keras_bn, source, use_ema=False)
  for v, key in plan.assign:
    if utils.variable_path(v).endswith(('moving_mean', 'moving_variance')):
      res['bn_stat_keras/' + key] = v.numpy()
  return compare(args, config, res, meta, up, up_meta, lr_runs, cases,
                 eval_augnames)


class _PlanNumbers:
  """What the learning rate reads from a run plan, with any total."""

  def __init__(self, steps_per_epoch, total_steps):
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = total_steps


def _pixels_apart(a, b):
  """(largest level difference, pixels with any channel apart) of two uint8
  images."""
  import numpy as np
  diff = np.abs(np.asarray(a, np.int32) - np.asarray(b, np.int32))
  return int(diff.max()), int(np.sum(np.any(diff > 0, axis=-1)))


def _diff(a, b):
  import numpy as np
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  if a.shape != b.shape:
    return dict(shape=[list(a.shape), list(b.shape)], max_abs=float('inf'),
                max_rel=float('inf'))
  abs_diff = np.abs(a - b)
  scale = np.maximum(np.abs(b), 1e-30)
  return dict(max_abs=float(abs_diff.max(initial=0.0)),
              max_rel=float((abs_diff / scale).max(initial=0.0)))


def compare(args, config, res, meta, up, up_meta, lr_runs, cases,
            eval_augnames):
  import numpy as np
  rows, failures = [], []

  def row(check, what, result, status, note=''):
    rows.append(dict(check=check, what=what, result=result, status=status,
                     note=note))
    if status == 'FAIL':
      failures.append(f'{check} {what}')

  # -- lr --
  for run in lr_runs:
    e = run['epochs']
    upstream = up[f'lr_{e}']
    exact = _diff(res[f'lr_{e}_float_total'], upstream)
    peak = float(np.max(np.abs(upstream)))
    exact['max_abs_over_peak'] = exact['max_abs'] / peak
    n = len(run['steps'])
    span = 'every step' if e == args.epochs else f'{n} sampled steps'
    row('lr', f'{e} epochs, {span}, same total_steps '
        f'({up_meta[f"lr_{e}_total_steps"]:g})',
        f'max abs {exact["max_abs"]:.2e} = {exact["max_abs_over_peak"]:.1e} '
        f'of the peak {peak:g}; per step rel {exact["max_rel"]:.1e}',
        'ok' if exact['max_abs_over_peak'] <= LR_RTOL else 'FAIL',
        'float32: per-step rel grows where 1 + cos cancels' if
        exact['max_rel'] > LR_RTOL else '')
    built = _diff(res[f'lr_{e}'], upstream)
    differing = int(np.sum(np.abs(res[f'lr_{e}'] - upstream) >
                           LR_RTOL * np.abs(upstream)))
    warm = int(config.train.lr_warmup_epoch *
               config.data.splits.train.num_images / config.train.batch_size)
    in_warmup = np.asarray(run['steps']) < warm
    warm_diff = _diff(res[f'lr_{e}'][in_warmup], upstream[in_warmup])
    row('lr', f'{e} epochs as built (port total_steps {run["total_steps"]})',
        f'max abs {built["max_abs"]:.2e} = {built["max_abs"] / peak:.1e} of '
        f'the peak; per step rel {built["max_rel"]:.1e} ({differing}/{n} '
        f'steps beyond rel 1e-6; warm-up max rel {warm_diff["max_rel"]:.1e})',
        'expected' if warm_diff['max_abs'] <= LR_RTOL * peak else 'FAIL',
        'deviation "train_steps": upstream model_fn uses the float '
        'epochs*steps_per_epoch in the cosine')
    meta[f'lr_{e}_diff'] = dict(same_total=exact, as_built=built)

  # -- ema --
  d = _diff(res['ema_shadows'], up['ema_shadows'])
  d_before = _diff(res['ema_shadows_step_before'], up['ema_shadows'])
  last_step = int(up['ema_steps'][-1])
  row('ema', f'{EMA_STEPS} steps x {EMA_WIDTH} values, decay '
      f'{config.train.ema_decay}, step after increment',
      f'max abs {d["max_abs"]:.2e}, rel {d["max_rel"]:.2e} (step read '
      f'before increment: rel {d_before["max_rel"]:.1e}); upstream step '
      f'{last_step}', 'ok' if d['max_rel'] <= EMA_RTOL else 'FAIL')
  meta['ema_diff'] = dict(after_increment=d, before_increment=d_before)
  same_sets = up_meta['ema_vars'] == meta['ema_vars']
  fmt = lambda kinds: ', '.join(
      f'{k} {v["variables"]} ({v["elements"]:,})' for k, v in kinds.items())
  row('ema', 'averaged variables (count, elements)',
      f'upstream {fmt(up_meta["ema_vars"])}; port {fmt(meta["ema_vars"])}',
      'ok' if same_sets else 'FAIL')

  # -- bn --
  up_bn, port_bn = up_meta['bn_layers'], meta['bn_layers']
  settings = lambda layers: sorted({(l['momentum'], l['epsilon'])
                                    for l in layers})
  same_bn = (len(up_bn) == len(port_bn) and
             settings(up_bn) == settings(port_bn))
  row('bn', 'layers, (momentum, epsilon)',
      f'upstream {len(up_bn)} {settings(up_bn)} '
      f'{sorted({l["cls"] for l in up_bn})} fused={sorted({str(l["fused"]) for l in up_bn})}; '
      f'port {len(port_bn)} {settings(port_bn)} '
      f'{sorted({l["cls"] for l in port_bn})}',
      'ok' if same_bn else 'FAIL')
  row('bn', 'weights copied by name (pretrained.load_pretrained)',
      meta['bn_load'].split(': ')[-1], 'ok')
  stat_keys = [k[len('bn_stat/'):] for k in res if k.startswith('bn_stat/')]
  missing = [k for k in up_meta['bn_stat_names'] if k not in stat_keys]
  stem = [k for k in stat_keys if k in meta['stem_stat_keys']]
  stem_d = max((_diff(res['bn_stat/' + k], up['bn_stat/' + k])['max_abs']
                for k in stem), default=float('inf'))
  row('bn', f'stem moving mean/var after 1 training step (batch '
      f'{BN_BATCH}x{BN_SIZE}px, {up_meta["bn_stats_changed"]} upstream '
      'statistics changed)', f'max abs {stem_d:.2e}',
      'ok' if stem_d <= BN_STEM_ATOL and not missing else 'FAIL')
  worst, worst_key = 0.0, ''
  for k in stat_keys:
    d = float(np.max(np.abs(res['bn_stat/' + k] - up['bn_stat/' + k])))
    if d > worst:
      worst, worst_key = d, k
  where = '/'.join(worst_key.split('/')[1:]) if worst_key else '-'
  row('bn', f'all {len(stat_keys)} moving statistics after the step',
      f'max abs {worst:.2e} ({where})',
      'ok' if worst <= BN_STATS_ATOL and not missing else 'FAIL')
  contrast = max(float(np.max(np.abs(res['bn_stat_keras/' + k] -
                                     up['bn_stat/' + k]))) for k in stat_keys)
  row('bn', '  the same with model.fused_bn=false (Keras 3 BN)',
      f'max abs {contrast:.2e}', 'info',
      'biased batch variance in the moving variance: the size of a real '
      'difference')
  meta['bn_diff_keras_bn'] = contrast
  ld = _diff(res['bn_logits'], up['bn_logits'])
  lrel = ld['max_abs'] / max(float(np.max(np.abs(up['bn_logits']))), 1e-12)
  row('bn', 'training-mode logits', f'max abs {ld["max_abs"]:.2e} '
      f'(max |diff| / max |logit| {lrel:.2e})',
      'ok' if lrel <= BN_LOGITS_RTOL else 'FAIL')
  meta['bn_diff'] = dict(stem_max_abs=stem_d, all_max_abs=worst,
                         all_worst=worst_key, logits=ld,
                         logits_rel=lrel, missing=missing)

  # -- grad --
  meta['grad_diff'] = {}
  for size in STAGE_SIZES:
    prefix = f'grad{size}/'
    keys = sorted(k[len(prefix):] for k in up if k.startswith(prefix))
    missing = [k for k in keys if prefix + k not in res]
    norms = {k: float(np.linalg.norm(up[prefix + k])) for k in keys}
    floor = GRAD_FLOOR * max(norms.values(), default=0.0)
    rel = {k: float(np.linalg.norm(res[prefix + k].astype(np.float64) -
                                   up[prefix + k])) / max(norms[k], floor)
           for k in keys if k not in missing}
    worst = max(rel, key=rel.get) if rel else '-'
    xd = abs(float(res[f'grad{size}_xent']) - float(up[f'grad{size}_xent']))
    row('grad', f'{size}px, batch {GRAD_BATCH}: {len(keys)} trainable '
        'variables', f'worst rel {rel.get(worst, float("inf")):.1e} '
        f'({"/".join(worst.split("/")[1:])}), median '
        f'{float(np.median(list(rel.values()))) if rel else float("inf"):.1e}'
        f'; loss {float(up[f"grad{size}_xent"]):.4f} on both, diff {xd:.1e}',
        'ok' if rel and not missing and max(rel.values()) <= GRAD_RTOL
        else 'FAIL')
    meta['grad_diff'][size] = dict(worst=worst, worst_rel=rel.get(worst),
                                   missing=missing, xent_diff=xd)

  # -- aug --
  meta['aug_diff'] = {}
  for case in cases:
    key = case['key']
    error = up_meta['aug_errors'].get(key)
    note = ''
    if 'sign' in case:
      note = 'sign pinned'
    if case['op'] == 'Cutout':
      note = f'centre pinned to {meta["cutout_centre"][case["size"]]}'
    if error:
      row('aug', key, f'upstream error: {error[:80]}', 'FAIL', note)
      continue
    max_abs, pixels = _pixels_apart(res['aug/' + key], up['aug/' + key])
    result = f'max {max_abs}, {pixels} px differ'
    meta['aug_diff'][key] = dict(max_abs=max_abs, pixels=pixels,
                                 args=up_meta['aug_args'].get(key))
    if case['op'] in ENHANCE_OPS and case['level'] == 5:
      note = 'factor 1.0: both return the image unchanged'
    if case['op'] in EXPECTED_OP_DIFFERENCES:
      row('aug', key, result, 'expected' if pixels else 'ok',
          EXPECTED_OP_DIFFERENCES[case['op']] if pixels else note)
    else:
      row('aug', key, result, 'ok' if pixels == 0 else 'FAIL', note)

  for case in cases:
    key = case['key']
    if case['op'] not in EXPECTED_OP_DIFFERENCES or 'aug/' + key not in up:
      continue
    max_abs, pixels = _pixels_apart(res['aug_upstream_pixels/' + key],
                                    up['aug/' + key])
    row('aug', f'  {key} with data.enhance_pixels=upstream',
        f'max {max_abs}, {pixels} px differ',
        'ok' if pixels == 0 else 'FAIL')

  # -- eval --
  for augname in eval_augnames:
    d = _diff(res['eval/' + augname], up['eval/' + augname])
    row('eval', f'{augname} at {EVAL_SIZE}px, {EVAL_IMAGES} images 28x28',
        f'max abs {d["max_abs"]:.2e}',
        'ok' if d['max_abs'] <= EVAL_ATOL else 'FAIL')
    meta[f'eval_diff_{augname}'] = d

  return rows, failures, meta, up_meta


def print_table(rows):
  widths = [max(len(r[c]) for r in rows) for c in ('check', 'what')]
  for r in rows:
    line = (f'{r["check"]:<{widths[0]}}  {r["what"]:<{widths[1]}}  '
            f'{r["status"]:<8}  {r["result"]}')
    if r['note']:
      line += f'  [{r["note"]}]'
    print(line)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  automl = upstream_folder(args.automl)
  if automl is None:
    _fail(f'--automl {args.automl}: no upstream efficientnetv2/ folder there '
          '(main.py, utils.py, autoaugment.py, ... missing)')
  args.automl = automl
  if args.side == 'upstream':
    if not args.work:
      _fail('--side=upstream needs --work')
    upstream_side(automl, args.work)
    return 0
  if not args.legacy_python:
    _fail("--legacy_python is required (or set $LEGACY_PYTHON): upstream's "
          'interpreter')
  legacy = shutil.which(os.path.expanduser(args.legacy_python))
  if not legacy:
    _fail(f'--legacy_python {args.legacy_python}: no such executable')
  args.legacy_python = legacy
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))
  from automl_effnetv2 import local_data  # pylint: disable=import-outside-toplevel
  data_dir = args.data_dir or local_data.default_fashion_mnist_dir()
  data_file = os.path.join(os.path.expanduser(data_dir or ''),
                           TRAIN_IMAGES_FILE)
  if not data_dir or not os.path.isfile(data_file):
    _fail(f'no {TRAIN_IMAGES_FILE} in --data_dir {data_dir}')
  if args.epochs < 1:
    _fail('--epochs must be at least 1')
  if args.keep:
    work = os.path.abspath(args.keep)
    os.makedirs(work, exist_ok=True)
  else:
    work = tempfile.mkdtemp(prefix='upstream_parity_')
  try:
    rows, failures, meta, up_meta = run_port_side(args, work, data_file)
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)
  print_table(rows)
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(dict(rows=rows, failures=failures, port=meta,
                     upstream=up_meta), f, indent=1, default=str)
  print(f'{len(failures)} unexpected difference(s)' +
        (': ' + ', '.join(failures) if failures else ''))
  return 1 if failures else 0


if __name__ == '__main__':
  sys.exit(main())
