r"""Trains upstream's own training step through the first stage switch, from
the port's initial weights on the port's batches.

  python bench/upstream_switch.py \
      --config runs/upstream_vs_port_prefix/port/none/seed_7 \
      --upstream_run runs/upstream_vs_port_prefix/upstream/none/seed_7 \
      --automl ~/automl/efficientnetv2 --legacy_python ~/automl-venv/bin/python

A 2-epoch `none` run's outcome is settled at its first stage switch, and the
port's runs have come through it worse than upstream's. This gives
upstream's trainer exactly what one of the port's runs had: the initial
weights of the port run in `--config` (its `runtime.seed`) and that run's
own training batches, the whole first stage and `--after` steps of the
second. Upstream trains with the `train_op` of its `main.py` `model_fn`
(as `bench/lockstep.py` does) under `--legacy_python`: the first stage in
one graph at its size, then, as upstream's stage loop does, a new graph at
the second stage's size restored from a checkpoint of the first. The port's
trainer on the same weights and batches repeats the port run itself (it is
deterministic), so the two outcomes compare the trainers on identical
inputs.

`--upstream_run` is an upstream run folder of the same recipe (its
config.yaml gives upstream's config, its model.ckpt-0 the variable names).
Prints the cross-entropy per 8 steps of each stage, the first step's loss
on both sides (the same weights on the same batch: a check that the
weights went across), and `switch_xent`, the mean cross-entropy of steps
313-384 as `bench/upstream_vs_port.py` counts it (recovered below 1.7).
`--output FILE.json` keeps every number.
"""
import json
import os
import shutil
import sys
import tempfile

import bench_cli
import lockstep
import stage_switch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOW = lockstep.WINDOW
# `switch_xent` of bench/upstream_vs_port.py: the 72 steps after the switch
# (its log intervals (312, 320] and (320, 384]); recovered below 1.7.
AFTER_SWITCH = 72
RECOVERED_BELOW = 1.7
INIT_NAME = 'model.ckpt-0'


def _fail(message):
  bench_cli.fail(__file__, message)


def parse_args(argv):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--config', help='a port run folder (its config.yaml: '
                      'the recipe, the seed of its weights and batches)')
  parser.add_argument('--upstream_run', help='an upstream run folder of the '
                      'same recipe (config.yaml and model.ckpt-0)')
  parser.add_argument('--after', type=int, default=AFTER_SWITCH,
                      help='steps of the second stage (a multiple of 8)')
  parser.add_argument('--output', help='JSON file for every number')
  lockstep.add_upstream_flags(parser)
  args = parser.parse_args(argv)
  if args.side == 'upstream':
    return args
  if args.after < WINDOW or args.after % WINDOW:
    _fail(f'--after must be a positive multiple of {WINDOW}')
  bench_cli.check_run_folder(__file__, args.config)
  if not args.upstream_run or not all(os.path.isfile(os.path.join(
      args.upstream_run, name)) for name in ('config.yaml',
                                             INIT_NAME + '.index')):
    _fail('--upstream_run must be an upstream run folder with config.yaml '
          f'and {INIT_NAME}')
  lockstep.check_upstream_flags(args, _fail)
  if args.output and not os.path.isdir(
      os.path.dirname(os.path.abspath(args.output))):
    _fail(f'--output: the folder of {args.output} does not exist')
  return args


def switch_xent(after_xents):
  """Mean cross-entropy of the first AFTER_SWITCH steps after the switch."""
  if len(after_xents) < AFTER_SWITCH:
    return None
  return sum(after_xents[:AFTER_SWITCH]) / AFTER_SWITCH


# ============================================================================
# Upstream side: runs under --legacy_python with upstream's modules only.
# ============================================================================
def _load_weights(tf, sess, values):
  """Assigns {upstream variable name: value}; every trainable variable
  must get one."""
  by_name = {v.op.name: v for v in tf.global_variables()}
  unknown = sorted(set(values) - set(by_name))
  if unknown:
    raise ValueError(f'no upstream variable {unknown[0]} (and '
                     f'{len(unknown) - 1} more)')
  missing = sorted(v.op.name for v in tf.trainable_variables()
                   if v.op.name not in values)
  if missing:
    raise ValueError(f'no port weight for {missing[0]} (and '
                     f'{len(missing) - 1} more)')
  for name, value in values.items():
    by_name[name].load(value, sess)


def _train_stage(step, sess, path, steps):
  import numpy as np  # pylint: disable=import-outside-toplevel
  with np.load(path) as data:  # Each array read once, as a whole.
    images, labels = data['images'], data['labels']
  results = [step.run(sess, images[i], labels[i]) for i in range(steps)]
  return [list(column) for column in zip(*results)]


def run_upstream_side(automl, upstream_run, work):
  import numpy as np  # pylint: disable=import-outside-toplevel
  tf, upstream_main = lockstep.upstream_modules(automl)
  config = lockstep.upstream_run_config(upstream_run)
  with open(os.path.join(work, 'plan.json'), encoding='utf-8') as f:
    plan = json.load(f)
  checkpoint = os.path.join(work, 'upstream', 'model.ckpt')
  stages = []
  for index, stage in enumerate(plan['stages']):
    with tf.Graph().as_default():
      step = lockstep.UpstreamStep(tf, upstream_main, config, stage['size'])
      saver = tf.train.Saver()
      with tf.Session() as sess:
        if index == 0:
          sess.run(tf.global_variables_initializer())
          with np.load(os.path.join(work, 'init.npz')) as data:
            _load_weights(tf, sess, {k: data[k] for k in data.files})
        else:  # As upstream's stage loop: a new graph from a checkpoint.
          saver.restore(sess, tf.train.latest_checkpoint(
              os.path.dirname(checkpoint)))
        loss, xent, lr = _train_stage(step, sess, stage['batches'],
                                      stage['steps'])
        if index + 1 < len(plan['stages']):  # The next stage restores it.
          saver.save(sess, checkpoint, global_step=step.global_step)
        end = int(sess.run(step.global_step))
    stages.append(dict(size=stage['size'], loss=loss, xent=xent, lr=lr,
                       end_step=end))
  with open(os.path.join(work, 'upstream.json'), 'w', encoding='utf-8') as f:
    json.dump(dict(stages=stages, tensorflow=tf.__version__), f)


# ============================================================================
# Port side.
# ============================================================================
def initial_weights(trainer, upstream_init):
  """The port's model variables (weights and batch-norm statistics) under
  upstream's names, as in `upstream_init`."""
  return {name: variable.numpy() for variable, name in
          stage_switch.upstream_keys(trainer, upstream_init)}


def first_step_loss(trainer, batches):
  """The port's training loss on the first saved batch, from the current
  weights (the trainer steps once)."""
  from automl_effnetv2 import train_lib  # pylint: disable=import-outside-toplevel
  dataset = lockstep.saved_batches(batches, trainer.config.data.num_classes)
  iterator = iter(train_lib.distribute_dataset(trainer.strategy,
                                               lambda _: dataset))
  trainer.steps.reset_train_sums()
  trainer.run_steps(iterator, 1)
  return float(trainer.steps.loss_sum.result())


def write_inputs(args, work):
  """init.npz, the batches of both stages and plan.json in `work`."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  trainer, scratch = stage_switch.port_trainer(args.config)
  try:
    stages = trainer.plan.stages
    if len(stages) < 2:
      _fail('--config is not a progressive run (fewer than two stages)')
    first, second = stages[0], stages[1]
    if second.max_steps - first.max_steps < args.after:
      _fail(f'--after: the second stage has only '
            f'{second.max_steps - first.max_steps} steps')
    np.savez(os.path.join(work, 'init.npz'), **initial_weights(
        trainer, os.path.join(args.upstream_run, INIT_NAME)))
    plan = []
    for stage, start, steps in ((first, 0, first.max_steps),
                                (second, first.max_steps, args.after)):
      path = os.path.join(work, f'batches_{stage.image_size}.npz')
      lockstep.save_batches(trainer, stage, start, steps, path)
      plan.append(dict(size=stage.image_size, steps=steps, batches=path))
    with open(os.path.join(work, 'plan.json'), 'w', encoding='utf-8') as f:
      json.dump(dict(stages=plan), f)
    port_loss = first_step_loss(trainer, plan[0]['batches'])
    return plan, port_loss, int(trainer.config.runtime.seed)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def summarize(args, seed, plan, port_loss, upstream):
  first, second = upstream['stages']
  after = switch_xent(second['xent'])
  return dict(
      config=args.config, upstream_run=args.upstream_run, seed=seed,
      upstream_tensorflow=upstream['tensorflow'],
      sizes=[stage['size'] for stage in plan],
      steps=[stage['steps'] for stage in plan],
      first_step_loss={'upstream': first['loss'][0], 'port': port_loss},
      xent=[first['xent'], second['xent']],
      lr=[first['lr'], second['lr']],
      end_step=second['end_step'],
      last_64_of_stage_1=sum(first['xent'][-64:]) / 64,
      switch_xent=after,
      recovered=None if after is None else after < RECOVERED_BELOW)


def print_report(result):
  for i, (size, xents) in enumerate(zip(result['sizes'], result['xent'])):
    print(f'stage {i + 1} ({size} px), cross-entropy per {WINDOW} steps: ' +
          ' '.join(f'{m:.2f}' for m in lockstep.window_means(xents)))
  losses = result['first_step_loss']
  print(f'loss of the first step: upstream {losses["upstream"]:.6f}, port '
        f'{losses["port"]:.6f}')
  print(f'last 64 steps of stage 1: {result["last_64_of_stage_1"]:.3f}')
  if result['switch_xent'] is None:
    print(f'switch_xent needs {AFTER_SWITCH} steps after the switch')
  else:
    print(f'switch_xent (the {AFTER_SWITCH} steps after the switch): '
          f'{result["switch_xent"]:.3f}, recovered: '
          f'{"yes" if result["recovered"] else "no"} (below '
          f'{RECOVERED_BELOW})')


def run_port_side(args):
  sys.path.insert(0, REPO)
  work = tempfile.mkdtemp(prefix='upstream_switch_')
  try:
    plan, port_loss, seed = write_inputs(args, work)
    print(f'port seed {seed}: {plan[0]["steps"]} steps at {plan[0]["size"]} '
          f'px, then {plan[1]["steps"]} at {plan[1]["size"]} px, upstream\'s '
          'trainer on the port\'s batches', flush=True)
    lockstep.call_upstream_side(
        __file__, args, _fail, f'--work={work}',
        f'--upstream_run={os.path.abspath(args.upstream_run)}')
    with open(os.path.join(work, 'upstream.json'), encoding='utf-8') as f:
      upstream = json.load(f)
    result = summarize(args, seed, plan, port_loss, upstream)
    print_report(result)
    if args.output:
      with open(args.output, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
    return 0
  finally:
    shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.side == 'upstream':
    run_upstream_side(args.automl, args.upstream_run, args.work)
    return 0
  return run_port_side(args)


if __name__ == '__main__':
  sys.exit(main())
