r"""Probes the port's training around progressive learning's first stage switch.

Trains with the port's trainer from a chosen starting point, on a chosen
stream of training batches, and prints the training cross-entropy of every
8 steps. Two experiments, on runs that `bench/upstream_vs_port.py` left:

  # From a state at a stage end (step 312 of a 2-epoch run) into the next
  # stage: the port's own checkpoint, or upstream's (weights and RMSProp
  # slots, or either part), 40 steps.
  python bench/stage_switch.py --config runs/upstream_vs_port/port/none/seed_0 \
      --state runs/upstream_vs_port/upstream/none/seed_0/model.ckpt-312 \
      --parts weights,slots --steps 40

  # From initial weights (the port's, drawn from --seed, or upstream's
  # model.ckpt-0) through the first stage and 64 steps of the second, on
  # the port's batches or on upstream's (written by --write_upstream_stream).
  python bench/stage_switch.py --config runs/upstream_vs_port/port/none/seed_0 \
      --seed 1 --init runs/upstream_vs_port/upstream/none/seed_0/model.ckpt-0 \
      --stream /tmp/upstream_stream
  python bench/stage_switch.py --write_upstream_stream /tmp/upstream_stream \
      --automl ~/automl/efficientnetv2 --legacy_python ~/automl-venv/bin/python \
      --tfds_data_dir ~/tensorflow_datasets

`--config` is a port run folder (its config.yaml is used; nothing there is
written). `--write_upstream_stream PREFIX` runs upstream's own input
pipeline (`datasets.build_dataset_input`, as main.py's stage loop calls it)
under `--legacy_python` and saves the first stage's batches (48 px,
magnitude 5) and 64 of the second's (56 px, magnitude 7.5) as uint8 files
PREFIX_48.npz and PREFIX_56.npz: upstream's `ft_randaug` images are whole
levels after RandAugment, so the files hold them exactly.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import bench_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 128
WINDOW = 8
# The recipe's stages in a 2-epoch run: (size, magnitude, batches written).
STREAM_STAGES = ((48, 5.0, 312), (56, 7.5, 64))


def _fail(message):
  bench_cli.fail(__file__, message)


def parse_args(argv):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--config', help='a port run folder (its config.yaml)')
  parser.add_argument('--seed', type=int, default=None,
                      help="runtime.seed: the port's initial weights and its "
                      "batches (default: --config's own)")
  parser.add_argument('--init', help="upstream checkpoint to start from "
                      "instead of the port's initial weights (model.ckpt-0)")
  parser.add_argument('--state', help='checkpoint at a stage end to go on '
                      "from: the port's ckpt-N or upstream's model.ckpt-N")
  parser.add_argument('--parts', default='weights,slots',
                      help="with an upstream --state: what to take from it "
                      "(weights, slots or both; the rest stays the port's "
                      'own state at that step, read from --config)')
  parser.add_argument('--steps', type=int, default=40,
                      help='steps after --state (a multiple of 8)')
  parser.add_argument('--stream', help='PREFIX of uint8 batch files from '
                      "--write_upstream_stream (default: the port's batches)")
  parser.add_argument('--write_upstream_stream', metavar='PREFIX')
  parser.add_argument('--automl', help="upstream's efficientnetv2/ folder")
  parser.add_argument('--legacy_python',
                      default=os.environ.get('LEGACY_PYTHON'))
  parser.add_argument('--tfds_data_dir', help='tfds folder with fashion_mnist')
  parser.add_argument('--hparam_str', default='',
                      help="overrides of --config's config ('data.x=1,...'), "
                      'e.g. data.enhance_pixels=upstream')
  parser.add_argument('--side', default='port', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.write_upstream_stream:
    needed = ('automl', 'tfds_data_dir') + (
        ('legacy_python',) if args.side == 'port' else ())
    for flag in needed:
      if not getattr(args, flag):
        _fail(f'--write_upstream_stream needs --{flag}')
    return args
  bench_cli.check_run_folder(__file__, args.config)
  if args.state and args.init:
    _fail('give --state (go on from a stage end) or --init (start a run), '
          'not both')
  if args.steps < WINDOW or args.steps % WINDOW:
    _fail(f'--steps must be a positive multiple of {WINDOW}')
  parts = set(args.parts.split(','))
  if not parts or parts - {'weights', 'slots'}:
    _fail(f'--parts takes weights and/or slots, not {args.parts!r}')
  if args.state:
    match = re.search(r'(?:^|/)(?:model\.)?ckpt-(\d+)$', args.state)
    if not match:
      _fail(f'--state {args.state}: expected a checkpoint named ckpt-N (the '
            "port's) or model.ckpt-N (upstream's)")
    own = os.path.join(args.config, f'ckpt-{match.group(1)}')
    for path in (args.state, own):
      if not os.path.isfile(path + '.index'):
        _fail(f'--state: {path} does not exist (the port run in --config '
              'needs its own checkpoint of the same step)')
  return args


# ============================================================================
# Upstream side: runs under --legacy_python with upstream's modules only.
# ============================================================================
def write_upstream_stream(automl, tfds_data_dir, prefix):
  import copy  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, automl)
  import tensorflow.compat.v1 as tf  # pylint: disable=import-outside-toplevel
  tf.disable_eager_execution()
  import datasets  # pylint: disable=import-outside-toplevel
  import effnetv2_configs  # pylint: disable=import-outside-toplevel
  import hparams  # pylint: disable=import-outside-toplevel
  config = copy.deepcopy(hparams.base_config)
  config.override(effnetv2_configs.get_model_config('efficientnetv2-b0'))
  config.override(datasets.get_dataset_config('fashion_mnist'))
  for size, magnitude, batches in STREAM_STAGES:
    config.data.ram = magnitude
    with tf.Graph().as_default():
      inp = datasets.build_dataset_input(True, size, tf.float32,
                                         tfds_data_dir, 'train', config.data)
      features, labels = tf.data.make_one_shot_iterator(
          inp.input_fn({'batch_size': BATCH})).get_next()
      images, classes = [], []
      with tf.Session() as sess:
        for _ in range(batches):
          x, y = sess.run([features['image'], labels['label']])
          images.append(np.round((x + 1.0) * 127.5).astype(np.uint8))
          classes.append(np.argmax(y, -1).astype(np.uint8))
    np.savez(f'{prefix}_{size}.npz', images=np.concatenate(images),
             labels=np.concatenate(classes))
    print(f'{prefix}_{size}.npz: {batches} batches of {size} px, '
          f'magnitude {magnitude}', flush=True)


# ============================================================================
# Port side.
# ============================================================================
def port_trainer(config_dir, seed=None, hparam_str=''):
  """The port's trainer for the run in `config_dir` (its config.yaml), at
  its initial weights, in a scratch folder; `seed` replaces the run's own
  runtime.seed unless None, and `hparam_str` ('data.x=1,...') overrides
  its config, which is then checked as a new run's is. A key the saved
  config lacks (added after that run started) has today's default, as on
  resume. Returns (trainer, the folder to delete)."""
  import copy  # pylint: disable=import-outside-toplevel
  import yaml  # pylint: disable=import-outside-toplevel
  from automl_effnetv2 import config_checks  # pylint: disable=import-outside-toplevel
  from automl_effnetv2 import hparams  # pylint: disable=import-outside-toplevel
  from automl_effnetv2 import strategy_choice  # pylint: disable=import-outside-toplevel
  from automl_effnetv2 import train_lib  # pylint: disable=import-outside-toplevel
  config = copy.deepcopy(hparams.base_config)
  with open(os.path.join(config_dir, 'config.yaml'), encoding='utf-8') as f:
    config.update(yaml.safe_load(f))
  if seed is not None:
    config.runtime.seed = seed
  if hparam_str:
    config.override(hparam_str)
    config_checks.validate(config, strategy_choice.STRATEGIES)
  work = tempfile.mkdtemp(prefix='stage_switch_')
  return train_lib.Trainer(config, work), work


def upstream_keys(trainer, checkpoint):
  """[(port variable, its name in upstream's checkpoint)] for the model's
  variables ('/head/' is '/head_1/' in some of upstream's graphs)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from automl_effnetv2 import pretrained  # pylint: disable=import-outside-toplevel
  source = pretrained.read_weights(checkpoint)
  plan = pretrained.plan_loading(trainer.model, source, use_ema=False)
  names = set(tf.train.load_checkpoint(checkpoint).get_variable_to_shape_map())
  return [(variable, stored_name(key, names)) for variable, key in plan.assign]


def stored_name(name, stored):
  """Upstream's name `name` as a checkpoint holding the names `stored` spells
  it: '/head/' is '/head_1/' in some of upstream's graphs."""
  return name if name in stored else name.replace('/head/', '/head_1/')


def _take_upstream_state(trainer, checkpoint, parts):
  """Assigns upstream's weights (with BN statistics) and/or RMSProp slots."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  reader = tf.train.load_checkpoint(checkpoint)
  index = {id(v): i for i, v in enumerate(trainer.steps.train_variables)}
  optimizer = trainer.optimizer
  for variable, stored in upstream_keys(trainer, checkpoint):
    if 'weights' in parts:
      variable.assign(reader.get_tensor(stored))
    i = index.get(id(variable))
    if 'slots' in parts and i is not None:
      optimizer._velocities[i].assign(reader.get_tensor(stored + '/RMSProp'))  # pylint: disable=protected-access
      optimizer._momentums[i].assign(reader.get_tensor(stored + '/RMSProp_1'))  # pylint: disable=protected-access


def _stream_iterator(trainer, prefix, size, batches):
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  path = f'{prefix}_{size}.npz'
  if not os.path.isfile(path):
    _fail(f'{path} is missing: write it with --write_upstream_stream')
  data = np.load(path)
  count = batches * BATCH
  if len(data['images']) < count:
    _fail(f'{path} holds {len(data["images"]) // BATCH} batches, '
          f'{batches} needed')
  images = data['images'][:count].astype(np.float32) / 127.5 - 1.0
  labels = np.eye(trainer.config.data.num_classes,
                  dtype=np.float32)[data['labels'][:count]]
  dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(
      BATCH, drop_remainder=True)
  from automl_effnetv2 import train_lib  # pylint: disable=import-outside-toplevel
  return iter(train_lib.distribute_dataset(trainer.strategy,
                                           lambda _: dataset))


def _train(trainer, iterator, steps):
  """Cross-entropy means of each WINDOW steps."""
  means = []
  for _ in range(steps // WINDOW):
    trainer.steps.reset_train_sums()
    trainer.run_steps(iterator, WINDOW)
    means.append(float(trainer.steps.xent_sum.result()) / WINDOW)
  return means


def _print(label, means):
  print(f'{label}: ' + ' '.join(f'{m:.3f}' for m in means), flush=True)


def run_port_side(args):
  bench_cli.quiet_tensorflow_import()
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from automl_effnetv2 import hparams  # pylint: disable=import-outside-toplevel
  from automl_effnetv2 import pretrained  # pylint: disable=import-outside-toplevel
  try:
    trainer, work = port_trainer(args.config, args.seed, args.hparam_str)
  except hparams.ConfigError as e:
    _fail(f'--hparam_str: {e}')
  try:
    stages = trainer.plan.stages
    if len(stages) < 2:
      _fail('--config is not a progressive run (fewer than two stages)')
    if args.state:
      step = int(args.state.rsplit('-', 1)[1])
      own = os.path.join(args.config, f'ckpt-{step}')
      trainer.checkpoints.checkpoint.read(own).assert_existing_objects_matched()
      if os.path.basename(args.state).startswith('model.ckpt'):
        _take_upstream_state(trainer, args.state, args.parts.split(','))
        origin = f"upstream's {args.parts} at step {step}, the rest the port's"
      else:
        origin = f"the port's own state at step {step}"
      stage = trainer.plan.stage_at_step(step)
      if stage is None:
        _fail(f'--state: step {step} is the end of the run in --config; '
              'give a checkpoint at an earlier stage end')
      # A saved stream starts where upstream's rebuilt pipeline starts a
      # stage: at its beginning.
      iterator = (_stream_iterator(trainer, args.stream, stage.image_size,
                                   args.steps) if args.stream else
                  trainer.stage_iterator(stage, step))
      print(f'from {origin}; stage {stage.index + 1} at {stage.image_size} px',
            flush=True)
      _print(f'cross-entropy per {WINDOW} steps', _train(trainer, iterator,
                                                          args.steps))
      return 0
    if args.init:
      trainer.model(tf.zeros([1, stages[0].image_size,
                              stages[0].image_size, 3]), training=False)
      try:
        print(pretrained.load_pretrained(trainer.model, args.init,
                                         use_ema=False)[0], flush=True)
      except pretrained.PretrainedError as e:
        _fail(f'--init: {e}')
    first, second = stages[0], stages[1]
    results = []
    for stage, steps in ((first, first.max_steps), (second, 64)):
      if args.stream:
        iterator = _stream_iterator(trainer, args.stream, stage.image_size,
                                    steps)
      else:
        iterator = trainer.stage_iterator(stage, int(
            trainer.global_step.numpy()))
      means = _train(trainer, iterator, steps - steps % WINDOW)
      if steps % WINDOW:  # The stage's last, shorter window.
        trainer.steps.reset_train_sums()
        trainer.run_steps(iterator, steps % WINDOW)
      _print(f'stage {stage.index + 1} ({stage.image_size} px), '
             f'cross-entropy per {WINDOW} steps', means)
      results.append(means)
    print(f'last 64 steps of stage 1: {np.mean(results[0][-8:]):.3f}; '
          f'first 64 of stage 2: {np.mean(results[1]):.3f}', flush=True)
    return 0
  finally:
    shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.side == 'upstream':
    write_upstream_stream(args.automl, args.tfds_data_dir,
                          args.write_upstream_stream)
    return 0
  if args.write_upstream_stream:
    prefix = os.path.abspath(args.write_upstream_stream)
    return subprocess.call([
        os.path.expanduser(args.legacy_python), os.path.abspath(__file__),
        '--side=upstream', f'--write_upstream_stream={prefix}',
        f'--automl={os.path.abspath(args.automl)}',
        f'--tfds_data_dir={os.path.abspath(args.tfds_data_dir)}'])
  sys.path.insert(0, REPO)
  return run_port_side(args)


if __name__ == '__main__':
  sys.exit(main())
