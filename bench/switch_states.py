r"""Describes training states at a stage end: the state each run carries into
the next stage.

  python bench/switch_states.py --config runs/upstream_vs_port_prefix/port/none/seed_7 \
      --states 'runs/upstream_vs_port_prefix/*/none/seed_*/*ckpt-312'

`--states` takes checkpoints, comma-separated, each a path or a pattern
(shell wildcards, quoted): the port's own `ckpt-N` and upstream's
`model.ckpt-N` (weights, batch-norm statistics and RMSProp slots, read by
name as `bench/stage_switch.py --state` reads them), all of one step N at
the end of a stage of the run in `--config`. Each state is read into the
port's model and optimizer in turn, and gets one row:

- `mean_square`: RMSProp's mean square, geometric mean over every trainable
  weight. With decay 0.9 it is close to the squared gradients of the last
  10 to 20 steps: how calm the stage's last steps were.
- `momentum_rms`: root mean square of RMSProp's momentum (the recent update
  per step; TF1's kernel keeps it with the learning rate included).
- `xent_batch_stats` and `xent_moving_stats`: the training cross-entropy
  (label smoothing included, as the runs log it) of the next stage's first
  `--batches` batches, drawn once from `--config`'s own input at its seed
  and the same for every state, with batch norm on each batch's statistics
  (as training computes the first step of the next stage) and on the moving
  statistics (far apart when the weights moved faster than the statistics
  follow).
- `kernel_rms`, `bn_scale_rms`, `bn_shift_rms`: the size of the weights
  (convolution and dense kernels, batch-norm scales and shifts).

`--output FILE.json` keeps the rows.
"""
import glob
import json
import math
import os
import re
import sys

import bench_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM_STATE = 'model.ckpt-'
PORT_STATE = 'ckpt-'
COLUMNS = ('mean_square', 'momentum_rms', 'xent_batch_stats',
           'xent_moving_stats', 'kernel_rms', 'bn_scale_rms', 'bn_shift_rms')


def _fail(message):
  bench_cli.fail(__file__, message)


def parse_args(argv):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--config', help='a port run folder (its config.yaml '
                      'gives the model, the stages and the next batches)')
  parser.add_argument('--states', help='checkpoints or patterns, '
                      'comma-separated (ckpt-N or model.ckpt-N, one step N)')
  parser.add_argument('--batches', type=int, default=8,
                      help="batches of the next stage to measure the loss on")
  parser.add_argument('--output', help='JSON file for the rows')
  args = parser.parse_args(argv)
  bench_cli.check_run_folder(__file__, args.config)
  if args.batches < 1:
    _fail('--batches must be at least 1')
  if not args.states:
    _fail('--states needs at least one checkpoint')
  folder = os.path.dirname(os.path.abspath(args.output or '.'))
  if args.output and not os.path.isdir(folder):
    _fail(f'--output: the folder {folder} does not exist; create it first')
  return args


def _natural(path):
  """Sort key that puts seed_9 before seed_10."""
  return [int(part) if part.isdigit() else part
          for part in re.split(r'(\d+)', path)]


def expand_states(spec):
  """The checkpoint prefixes that `spec` names, in order (a pattern's
  matches by their numbers) and each once; (None, the item) when an item
  names no checkpoint."""
  found = []
  for item in (part.strip() for part in spec.split(',')):
    if not item:
      continue
    matches = sorted((path[:-len('.index')]
                      for path in glob.glob(item + '.index')), key=_natural)
    if not matches:
      return None, item
    found.extend(m for m in matches if m not in found)
  return found, None


def state_step(path):
  """N of a checkpoint named ckpt-N or model.ckpt-N; None otherwise."""
  name = os.path.basename(path)
  for prefix in (UPSTREAM_STATE, PORT_STATE):
    if name.startswith(prefix) and name[len(prefix):].isdigit():
      return int(name[len(prefix):])
  return None


def label(path):
  """A state's name in the table: its folder, up to three levels."""
  parts = os.path.normpath(os.path.dirname(path)).split(os.sep)
  return '/'.join(parts[-3:])


def geometric_mean(arrays):
  import numpy as np  # pylint: disable=import-outside-toplevel
  logs = [np.log(np.asarray(a, np.float64)).ravel() for a in arrays]
  return float(np.exp(np.concatenate(logs).mean()))


def root_mean_square(arrays):
  import numpy as np  # pylint: disable=import-outside-toplevel
  values = [np.asarray(a, np.float64).ravel() for a in arrays]
  if not values:
    return math.nan
  values = np.concatenate(values)
  return float(np.sqrt(np.mean(values * values)))


def _weight_kind(variable):
  path = getattr(variable, 'path', variable.name)
  if 'moving_' in path:
    return None
  if path.endswith('gamma'):
    return 'bn_scale_rms'
  if path.endswith('beta'):
    return 'bn_shift_rms'
  if len(variable.shape) >= 2:
    return 'kernel_rms'
  return None


def _local(value):
  """The tensor behind a one-replica distributed value (or the value)."""
  return value.values[0] if hasattr(value, 'values') else value


def describe(trainer, batches):
  """One row of COLUMNS for the state now in `trainer`."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  optimizer = trainer.optimizer
  count = len(trainer.steps.train_variables)
  row = {
      'mean_square': geometric_mean(
          optimizer._velocities[i].numpy() for i in range(count)),  # pylint: disable=protected-access
      'momentum_rms': root_mean_square(
          optimizer._momentums[i].numpy() for i in range(count)),  # pylint: disable=protected-access
  }
  model = trainer.model
  kept = [v.numpy() for v in model.weights]
  for training, name in ((True, 'xent_batch_stats'),
                         (False, 'xent_moving_stats')):
    losses = [
        float(tf.reduce_mean(trainer.steps.objective.per_example_loss(
            labels, model(images, training=training))))
        for images, labels in batches]
    row[name] = sum(losses) / len(losses)
    # A training-mode call moves the moving statistics: put them back.
    for variable, value in zip(model.weights, kept):
      variable.assign(value)
  kinds = {}
  for variable in model.weights:
    kind = _weight_kind(variable)
    if kind:
      kinds.setdefault(kind, []).append(variable.numpy())
  for kind in ('kernel_rms', 'bn_scale_rms', 'bn_shift_rms'):
    row[kind] = root_mean_square(kinds.get(kind, []))
  return row


def read_state(trainer, path):
  """Puts the checkpoint at `path` into the trainer's model and optimizer;
  one line and exit 2 when it does not hold a whole training state of the
  model in --config."""
  import stage_switch  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  try:
    if os.path.basename(path).startswith(UPSTREAM_STATE):
      stage_switch._take_upstream_state(trainer, path, ('weights', 'slots'))  # pylint: disable=protected-access
    else:
      trainer.checkpoints.checkpoint.read(
          path).assert_existing_objects_matched()
  except (tf.errors.OpError, AssertionError, ValueError, KeyError) as e:
    reason = str(getattr(e, 'message', e)).strip().splitlines()
    _fail(f'--states: {path} is not a training state of the model in '
          f'--config ({reason[0] if reason else type(e).__name__})')


def run(args, states, step):
  import shutil  # pylint: disable=import-outside-toplevel
  import stage_switch  # pylint: disable=import-outside-toplevel
  trainer, work = stage_switch.port_trainer(args.config)
  try:
    if not hasattr(trainer.optimizer, '_velocities'):
      _fail(f'--config trains with train.optimizer='
            f'{trainer.config.train.optimizer}; the states are described '
            "by RMSProp's slots, so it must be rmsprop")
    ends = [stage.max_steps for stage in trainer.plan.stages[:-1]]
    if step not in ends:
      _fail(f'--states are at step {step}, which ends no stage of --config '
            f'(stage ends: {", ".join(map(str, ends)) or "none"})')
    stage = trainer.plan.stage_at_step(step)
    iterator = trainer.stage_iterator(stage, step)
    batches = [tuple(_local(part) for part in next(iterator))
               for _ in range(args.batches)]
    rows = []
    for path in states:
      read_state(trainer, path)
      rows.append(dict(state=path, step=step, **describe(trainer, batches)))
      row = rows[-1]
      print(f'{label(path)}: ' + ', '.join(
          f'{name} {row[name]:.4g}' for name in COLUMNS), flush=True)
    return rows, stage.image_size
  finally:
    shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  states, missing = expand_states(args.states)
  if states is None:
    _fail(f'--states: {missing} names no checkpoint (no {missing}.index)')
  steps = {state_step(path) for path in states}
  if None in steps:
    bad = next(p for p in states if state_step(p) is None)
    _fail(f'--states: {bad} is not a ckpt-N or model.ckpt-N checkpoint')
  if len(steps) > 1:
    _fail(f'--states must all be of one step, not {sorted(steps)}')
  sys.path.insert(0, REPO)
  rows, size = run(args, states, steps.pop())
  print(f'{len(rows)} states; the next stage at {size} px, '
        f'{args.batches} batches', flush=True)
  if args.output:
    with open(args.output, 'w', encoding='utf-8') as f:
      json.dump(rows, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
