r"""Trains upstream's own training step and the port's in lockstep.

  python bench/lockstep.py --config runs/upstream_vs_port_prefix/port/none/seed_7 \
      --state runs/upstream_vs_port_prefix/upstream/none/seed_7/model.ckpt-312 \
      --steps 64 --automl ~/automl/efficientnetv2 \
      --legacy_python ~/automl-venv/bin/python

Both sides start from one upstream checkpoint (`--state`: weights,
batch-norm statistics, RMSProp slots and the global step of a run of
`bench/upstream_vs_port.py`) and train `--steps` steps on the same batches:
the port's own training batches for that stage and step, drawn once from
the port run in `--config` (at its own seed, or at `--seed`) and saved as
whole levels, which both sides read.
Upstream trains with the `train_op` of its own `main.py`'s `model_fn` (loss
with weight decay, the learning-rate schedule, TF1 RMSProp, the batch-norm
updates, EMA), under `--legacy_python`, in graph mode; the port with its
`Trainer`'s compiled step. The port trains twice more from the same start,
as a yardstick for how fast two trainings that differ only by rounding drift
apart: once from its own start again (the same computation, run twice) and
once with every trainable weight multiplied by (1 + 1e-7 x a standard
normal draw), about a float32 rounding of each weight.

Prints each side's training loss and cross-entropy per step, grouped in
windows of 8, and the distance between the weights (over all trainable
variables: |a - b| / |b|, Euclidean norms) after 1, 2, 4, 8, ... steps and
at the end: port against upstream, and the perturbed port against the port.
If the port's step were a different function from upstream's, its distance
to upstream would start at the size of that difference and stay above the
perturbed control; if the two compute the same step up to rounding, both
distances start near float32 rounding and grow alike.
`--output FILE.json` keeps every number.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import bench_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = 8
# Relative size of the control's perturbation of each weight: about one
# float32 rounding (2**-24 = 6e-8).
PERTURBATION = 1e-7
STATE_NAME = 'model.ckpt-'


def _fail(message):
  bench_cli.fail(__file__, message)


def add_upstream_flags(parser):
  """--automl and --legacy_python, and the hidden flags with which the
  script runs itself under upstream's python (`run_upstream_side`)."""
  parser.add_argument('--automl', help="upstream's efficientnetv2/ folder, "
                      'prepared by patches/patchset.py upstream')
  parser.add_argument('--legacy_python',
                      default=os.environ.get('LEGACY_PYTHON'),
                      help="python of upstream's environment (TF 2.15)")
  parser.add_argument('--side', default='port', help=argparse.SUPPRESS)
  parser.add_argument('--work', help=argparse.SUPPRESS)


def check_upstream_flags(args, fail):
  if not args.automl or not os.path.isfile(
      os.path.join(args.automl, 'main.py')):
    fail("--automl must be upstream's efficientnetv2/ folder (it holds "
         'main.py)')
  if not args.legacy_python or not os.access(
      os.path.expanduser(args.legacy_python), os.X_OK):
    fail('--legacy_python must be the python of the environment from '
         'patches/upstream-requirements.txt')


def call_upstream_side(script, args, fail, *flags):
  """Runs `script` again under --legacy_python with --side=upstream, the
  absolute --automl and `flags`; fails in one line if it does."""
  code = subprocess.call([
      os.path.expanduser(args.legacy_python), os.path.abspath(script),
      '--side=upstream', f'--automl={os.path.abspath(args.automl)}', *flags])
  if code:
    fail(f"upstream's side failed (exit {code}); its output is above")


def parse_args(argv):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--config', help='a port run folder (its config.yaml '
                      'and, past step 0, its own checkpoint of that step)')
  parser.add_argument('--state', help="upstream's model.ckpt-N to start from")
  parser.add_argument('--steps', type=int, default=64,
                      help='steps to train (a multiple of 8)')
  parser.add_argument('--seed', type=int, default=None,
                      help="runtime.seed of the port's batches (default: "
                      "--config's own)")
  parser.add_argument('--output', help='JSON file for every number')
  add_upstream_flags(parser)
  parser.add_argument('--size', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.side == 'upstream':
    return args
  if args.steps < WINDOW or args.steps % WINDOW:
    _fail(f'--steps must be a positive multiple of {WINDOW}')
  bench_cli.check_run_folder(__file__, args.config)
  if not args.state or not os.path.basename(args.state).startswith(
      STATE_NAME) or not args.state.rsplit('-', 1)[1].isdigit():
    _fail("--state must be upstream's checkpoint model.ckpt-N")
  if not os.path.isfile(args.state + '.index'):
    _fail(f'--state: {args.state} does not exist')
  step = state_step(args.state)
  if step and not os.path.isfile(
      os.path.join(args.config, f'ckpt-{step}.index')):
    _fail(f'--config has no ckpt-{step}: the port run needs its own '
          'checkpoint of the same step (or start from model.ckpt-0)')
  check_upstream_flags(args, _fail)
  return args


def state_step(state):
  return int(state.rsplit('-', 1)[1])


def record_points(steps):
  """1, 2, 4, ... up to `steps`, and `steps`."""
  points, k = [], 1
  while k < steps:
    points.append(k)
    k *= 2
  return points + [steps]


def relative_distance(a, b):
  """|a - b| / |b| over dicts of arrays with the same keys (float64 sums)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  num = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in b)
  den = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in b)
  return (num / den) ** 0.5


def window_means(values):
  return [sum(values[i:i + WINDOW]) / WINDOW
          for i in range(0, len(values) - WINDOW + 1, WINDOW)]


# ============================================================================
# Upstream side: runs under --legacy_python with upstream's modules only.
# ============================================================================
def upstream_modules(automl):
  """Upstream's TF1 module, main and config modules, imported as its main.py
  runs them (graph mode) and with main.py's flags parsed."""
  sys.path.insert(0, automl)
  import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel
  tf.disable_eager_execution()  # as upstream's main.py
  import main as upstream_main  # pylint: disable=import-outside-toplevel
  upstream_main.FLAGS(['lockstep', '--use_tpu=false'])
  return tf, upstream_main


def upstream_run_config(run_dir):
  """The config an upstream run's main() saved (stage values aside), on
  upstream's base config and its model's."""
  import copy  # pylint: disable=import-outside-toplevel
  import effnetv2_configs  # pylint: disable=import-outside-toplevel
  import hparams  # pylint: disable=import-outside-toplevel
  import yaml  # pylint: disable=import-outside-toplevel
  # It holds python slices (the splits), which only yaml's unsafe loader
  # reads.
  with open(os.path.join(run_dir, 'config.yaml'), encoding='utf-8') as f:
    saved = yaml.load(f, Loader=yaml.UnsafeLoader)
  # Its block strings were saved decoded: the model's config supplies them.
  del saved['model']['blocks_args']
  config = copy.deepcopy(hparams.base_config)
  config.override(effnetv2_configs.get_model_config(
      saved['model']['model_name']))
  config.override(saved, allow_new_keys=True)
  return config


class UpstreamStep:
  """The training step of upstream's `main.py` `model_fn` at one image
  size, in the current graph, fed one batch at a time."""

  def __init__(self, tf, upstream_main, config, size):
    self.global_step = tf.train.get_or_create_global_step()
    self.batch = config.train.batch_size
    self.num_classes = config.data.num_classes
    self.images = tf.placeholder(tf.float32, [self.batch, size, size, 3])
    self.labels = tf.placeholder(tf.float32, [self.batch, self.num_classes])
    # main() builds params as below; TPUEstimator adds batch_size.
    params = dict(steps_per_epoch=config.data.splits.train.num_images /
                  self.batch, image_size=size, config=config,
                  batch_size=self.batch)
    spec = upstream_main.model_fn({'image': self.images},
                                  {'label': self.labels},
                                  tf.estimator.ModeKeys.TRAIN, params)
    summaries = dict(tf.get_collection('scalar_summaries'))
    self.fetches = [spec.train_op, spec.loss, summaries['loss/xent'],
                    summaries['train/lr']]

  def run(self, sess, levels, classes):
    """One step on a batch of uint8 levels and class ids: (loss, xent, lr)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    feed = {self.images: levels.astype(np.float32) / 127.5 - 1.0,
            self.labels: np.eye(self.num_classes, dtype=np.float32)[classes]}
    _, loss, xent, lr = sess.run(self.fetches, feed)
    return float(loss), float(xent), float(lr)


def run_upstream_side(automl, state, work, size, steps):
  import numpy as np  # pylint: disable=import-outside-toplevel
  tf, upstream_main = upstream_modules(automl)
  config = upstream_run_config(os.path.dirname(state))
  # Indexing an npz file reads its whole array: read each once.
  with np.load(os.path.join(work, 'batches.npz')) as data:
    batch_images, batch_labels = data['images'], data['labels']
  points = set(record_points(steps))
  with tf.Graph().as_default():
    step = UpstreamStep(tf, upstream_main, config, size)
    trainable = tf.trainable_variables()
    saver = tf.train.Saver()
    losses, xents, rates, weights = [], [], [], {}
    with tf.Session() as sess:
      saver.restore(sess, state)
      start = sess.run(step.global_step)
      for i in range(steps):
        loss, cross, rate = step.run(sess, batch_images[i], batch_labels[i])
        losses.append(loss)
        xents.append(cross)
        rates.append(rate)
        if i + 1 in points:
          for v, value in zip(trainable, sess.run(trainable)):
            weights[f'{i + 1}/{v.op.name}'] = value
      end = sess.run(step.global_step)
  np.savez(os.path.join(work, 'upstream_weights.npz'), **weights)
  with open(os.path.join(work, 'upstream.json'), 'w') as f:
    json.dump(dict(loss=losses, xent=xents, lr=rates, start_step=int(start),
                   end_step=int(end), tensorflow=tf.__version__), f)


# ============================================================================
# Port side.
# ============================================================================
def _port_trainer(args, step):
  """The port's trainer at `step` with upstream's weights and slots, and
  {id(variable): its name in upstream's checkpoint}."""
  import stage_switch  # pylint: disable=import-outside-toplevel
  trainer, work = stage_switch.port_trainer(args.config, args.seed)
  if step:
    trainer.checkpoints.checkpoint.read(os.path.join(
        args.config, f'ckpt-{step}')).assert_existing_objects_matched()
  stage_switch._take_upstream_state(  # pylint: disable=protected-access
      trainer, args.state, ['weights', 'slots'])
  names = {id(variable): stored for variable, stored in
           stage_switch.upstream_keys(trainer, args.state)}
  return trainer, work, names


def save_batches(trainer, stage, step, steps, path):
  """The port's training batches from `step` on, as whole levels."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  iterator = trainer.stage_iterator(stage, step)
  images, labels = [], []
  for _ in range(steps):
    x, y = (trainer.strategy.experimental_local_results(t)[0].numpy()
            for t in next(iterator))
    levels = np.round((x + 1.0) * 127.5)
    if np.max(np.abs(levels / 127.5 - 1.0 - x)) > 1e-6:
      _fail('the port\'s batches are not whole levels; lockstep needs '
            'augmentation that ends in uint8 images (ft_randaug)')
    images.append(levels.astype(np.uint8))
    labels.append(np.argmax(y, -1).astype(np.uint8))
  np.savez(path, images=np.stack(images), labels=np.stack(labels))


def _weights(trainer, names):
  """The trainable weights under the names in `names` (upstream's)."""
  return {names[id(v)]: v.numpy() for v in trainer.steps.train_variables}


def saved_batches(path, num_classes):
  """The batches of `save_batches` as a dataset, one element per batch."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  with np.load(path) as data:
    images, labels = data['images'], data['labels']
  return tf.data.Dataset.from_tensor_slices((
      images.astype(np.float32) / 127.5 - 1.0,
      np.eye(num_classes, dtype=np.float32)[labels]))


def port_steps(trainer, names, dataset, steps):
  from automl_effnetv2 import train_lib  # pylint: disable=import-outside-toplevel
  iterator = iter(train_lib.distribute_dataset(trainer.strategy,
                                               lambda _: dataset))
  points = set(record_points(steps))
  losses, xents, weights = [], [], {}
  for i in range(steps):
    trainer.steps.reset_train_sums()
    trainer.run_steps(iterator, 1)
    losses.append(float(trainer.steps.loss_sum.result()))
    xents.append(float(trainer.steps.xent_sum.result()))
    if i + 1 in points:
      weights[i + 1] = _weights(trainer, names)
  return losses, xents, weights


def perturb(trainer, seed=0):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  for v in trainer.steps.train_variables:
    value = v.numpy()
    v.assign(value * (1.0 + PERTURBATION * rng.standard_normal(
        value.shape)).astype(value.dtype))


def run_upstream_child(args, work, size):
  call_upstream_side(__file__, args, _fail, f'--work={work}',
                     f'--size={size}', f'--steps={args.steps}',
                     f'--state={os.path.abspath(args.state)}')
  import numpy as np  # pylint: disable=import-outside-toplevel
  with open(os.path.join(work, 'upstream.json'), encoding='utf-8') as f:
    result = json.load(f)
  stored = np.load(os.path.join(work, 'upstream_weights.npz'))
  weights = {}
  for key in stored.files:
    point, name = key.split('/', 1)
    weights.setdefault(int(point), {})[name] = stored[key]
  return result, weights


def run_port_side(args):
  sys.path.insert(0, REPO)
  step = state_step(args.state)
  trainer, trainer_work, names = _port_trainer(args, step)
  work = tempfile.mkdtemp(prefix='lockstep_')
  try:
    stage = trainer.plan.stage_at_step(step)
    if stage is None or step + args.steps > stage.max_steps:
      _fail(f'--steps: steps {step}-{step + args.steps} do not lie in one '
            f'stage of the run in --config')
    batches = os.path.join(work, 'batches.npz')
    save_batches(trainer, stage, step, args.steps, batches)
    start = os.path.join(work, 'start')
    start_path = trainer.checkpoints.checkpoint.write(start)
    print(f'from {args.state} (step {step}), stage {stage.index + 1} at '
          f'{stage.image_size} px, {args.steps} steps on the port\'s batches',
          flush=True)
    upstream, up_weights = run_upstream_child(args, work, stage.image_size)
    missing = set(up_weights[args.steps]) - set(names.values())
    if missing:
      _fail(f"no port variable for upstream's {sorted(missing)[0]} "
            f'(and {len(missing) - 1} more)')
    dataset = saved_batches(batches, trainer.config.data.num_classes)
    runs = {}
    for variant in ('port', 'port again', 'port perturbed'):
      trainer.checkpoints.checkpoint.read(start_path).assert_existing_objects_matched()
      if variant == 'port perturbed':
        perturb(trainer)
      runs[variant] = port_steps(trainer, names, dataset, args.steps)
      print(f'{variant}: done', flush=True)
    result = summarize(args, step, stage.image_size, upstream, up_weights,
                       runs)
    print_report(result)
    if args.output:
      with open(args.output, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
    return 0
  finally:
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(trainer_work, ignore_errors=True)


def _distances(a, b):
  """{n: relative_distance after n steps} of two runs' recorded weights."""
  return {n: relative_distance(a[n], b[n]) for n in sorted(b)}


def summarize(args, step, size, upstream, up_weights, runs):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  port_w = runs['port'][2]
  return dict(
      state=args.state, config=args.config, start_step=step, size=size,
      steps=args.steps, upstream_tensorflow=upstream['tensorflow'],
      port_tensorflow=tf.__version__, upstream_lr=upstream['lr'],
      loss={'upstream': upstream['loss'],
            **{name: run[0] for name, run in runs.items()}},
      xent={'upstream': upstream['xent'],
            **{name: run[1] for name, run in runs.items()}},
      distance={
          'port vs upstream': _distances(port_w, up_weights),
          'port again vs port': _distances(runs['port again'][2], port_w),
          'port perturbed vs port': _distances(runs['port perturbed'][2],
                                               port_w),
      })


def print_report(result):
  print(f'\ncross-entropy per {WINDOW} steps (steps '
        f'{result["start_step"] + 1}-'
        f'{result["start_step"] + result["steps"]}):')
  for name, values in result['xent'].items():
    print(f'  {name:15s} ' + ' '.join(f'{m:.4f}' for m in
                                      window_means(values)))
  first = {name: values[0] for name, values in result['loss'].items()}
  print('loss of the first step: ' + ', '.join(
      f'{name} {value:.6f}' for name, value in first.items()))
  print('\nweight distance |a - b| / |b| after n steps:')
  names = list(result['distance'])
  print('  n     ' + ''.join(f'{name:>24s}' for name in names))
  for n in result['distance'][names[0]]:
    print(f'  {n:<6d}' + ''.join(f'{result["distance"][name][n]:24.2e}'
                                 for name in names))


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.side == 'upstream':
    run_upstream_side(args.automl, args.state, args.work, args.size,
                      args.steps)
    return 0
  return run_port_side(args)


if __name__ == '__main__':
  sys.exit(main())
