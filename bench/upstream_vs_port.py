r"""Trains upstream's own main.py and this port on one recipe, in turns.

  python bench/upstream_vs_port.py \
      --automl ~/automl/efficientnetv2 --legacy_python ~/automl-venv/bin/python \
      --tfds_data_dir ~/tensorflow_datasets --output_dir runs/upstream_vs_port \
      --results docs/upstream_vs_port --epochs 2 --seeds 2

`--automl` is a google/automl checkout that `patches/patchset.py upstream`
has prepared, `--legacy_python` the interpreter of the environment from
`patches/upstream-requirements.txt`, and `--tfds_data_dir` the folder that
`patches/upstream_data.py` filled. Both sides train EfficientNetV2-B0 on
Fashion-MNIST with the `fashion_mnist` recipe as upstream's config carries
it: the recipe keys upstream has no config for (`data.translate_const`,
`data.cutout_const`, `data.ra_ops`, `data.aug_fill`) are set back to
upstream's behaviour on the port's side, so both run upstream's RandAugment
(16 ops, translate 100 px, cutout 40 px, gray fill).

Runs go seed-major, and within a seed and mode upstream first, then the
port, so that drift of the machine's speed falls on both sides alike. Each
run lands in <output_dir>/<side>/<mode>/seed_<k> with a `summary.json`; a
run with one is skipped, so an interrupted comparison resumes by running the
same command again: a run whose training did not finish starts over, one
whose training finished (`phases.json`) goes on with its evaluation. Upstream has no seed
flag: its "seeds" are independent runs with its own random initialization.

With `--same_init`, each port run starts from the weights upstream's run of
the same mode and seed started from (its `model.ckpt-0`, loaded with
`train.ft_init_ckpt`), so that the two sides differ only in their code and
their random streams (data order, augmentation draws), not in the draw of
the initial weights.

`--cross_eval` evaluates each finished upstream run's last checkpoint (its
EMA weights) with the port's evaluator and records the top-1 in the run's
summary beside upstream's own evaluation: the two evaluators must agree.

`--stop_after_step N` trains only the first N steps of each run (the
schedule stays that of the whole run): the driver stops the training with
SIGTERM once the run's summaries reach step N, and nothing is evaluated.
Such prefix runs cost a fraction of a whole run and show how each side
comes through the first stage switch; keep them in their own
`--output_dir`, since a later whole run in the same folder would resume from
the stopped one.

The report gives each run's `switch_xent`: its mean train cross-entropy
over the 64-step log interval that follows the first stage switch (and the
few steps before that interval), for whole and prefix runs alike.

`--tally A.json,B.json,...` reads reports written before and counts, per
side, the `none` runs whose `switch_xent` is below RECOVERED_BELOW, with
Fisher's exact test between the two sides (an upstream run listed in
several reports counts once). The boundary was read off 2-epoch runs, so
only reports of 2 epochs are counted.

`--report_only` rebuilds `<results>.json` and `<results>.png` (train
cross-entropy per log interval, mean over seeds, both sides) from the
summaries.
"""
import glob
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

import bench_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDES = ('upstream', 'port')
BATCH = 128
TRAIN_IMAGES = 60000

# How often a prefix run's summaries are looked at, and how long a stopped
# training may take to save and exit before it is killed.
STOP_POLL_SECONDS = 10
STOP_GRACE_SECONDS = 300

# The train cross-entropy after the first stage switch (`switch_xent`) that
# divides the 2-epoch `none` runs: the runs that reached about 85 % top-1
# had 1.53 and 1.57, the ten that ended at or below 80.6 % had 1.83 to 2.84.
RECOVERED_BELOW = 1.7
# The run length that boundary belongs to: at other lengths the loss at the
# switch is another (at 10 epochs about 1.1 before it), so `--tally` counts
# only reports of this many epochs.
RECOVERED_EPOCHS = 2

# The port's recipe values that upstream's config cannot hold, put back to
# what upstream does (see the module docstring).
UPSTREAM_AUGMENTATION = ('data.translate_const=None,data.cutout_const=None,'
                         'data.ra_ops=None,data.aug_fill=None')


def parse_args(argv):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--automl', help="upstream's efficientnetv2/ folder, "
                      'prepared by patches/patchset.py upstream')
  parser.add_argument('--legacy_python',
                      help="python of upstream's environment (TF 2.15)")
  parser.add_argument('--tfds_data_dir',
                      help='tfds folder with fashion_mnist for upstream')
  parser.add_argument('--output_dir', default='runs/upstream_vs_port')
  parser.add_argument('--results', default='docs/upstream_vs_port',
                      help='writes <results>.json and <results>.png')
  parser.add_argument('--epochs', type=int, default=2,
                      help='whole epochs (upstream fails on fractions)')
  parser.add_argument('--seeds', type=int, default=2,
                      help='how many runs per side and mode')
  parser.add_argument('--first_seed', type=int, default=0,
                      help='the first seed (upstream: the first run number), '
                      'to add runs beside earlier ones')
  parser.add_argument('--modes', default='none,no_progressive')
  parser.add_argument('--sides', default=','.join(SIDES),
                      help='which sides to train (more runs of one side)')
  parser.add_argument('--port_hparams', default='',
                      help="extra hparam overrides for the port's runs, e.g. "
                      'train.restart_input_each_stage=true')
  parser.add_argument('--same_init', action='store_true',
                      help="port runs start from the initial weights of "
                      "upstream's run with the same mode and seed")
  parser.add_argument('--cross_eval', action='store_true',
                      help="evaluate upstream's checkpoints with the port")
  parser.add_argument('--stop_after_step', type=int, default=0,
                      help='train only this many steps of each run, then '
                      'stop it without evaluation (0: whole runs)')
  parser.add_argument('--report_only', action='store_true')
  parser.add_argument('--tally', default='',
                      help='comma-separated report JSON files: count the '
                      'none runs that recovered from the first switch')
  return parser.parse_args(argv)


def check_args(args):
  """One line naming the problem and the fix, or None."""
  if args.epochs < 1 or args.seeds < 1:
    return '--epochs and --seeds must be at least 1.'
  if args.first_seed < 0:
    return '--first_seed must be 0 or more.'
  if not 0 <= args.stop_after_step < total_steps(args.epochs):
    return (f'--stop_after_step must be from 0 (whole runs) to '
            f'{total_steps(args.epochs) - 1}, the last step of a '
            f'{args.epochs}-epoch run.')
  unknown = set(args.sides.split(',')) - set(SIDES)
  if unknown:
    return f'--sides takes {" and/or ".join(SIDES)}, not {sorted(unknown)}.'
  if args.port_hparams and not args.report_only:
    sys.path.insert(0, REPO)
    # pylint: disable=import-outside-toplevel
    from automl_effnetv2 import hparams
    from automl_effnetv2 import run_config
    try:
      run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                              f'{UPSTREAM_AUGMENTATION},{args.port_hparams}')
    except hparams.ConfigError as e:
      return f'--port_hparams: {e}'
  if args.tally:
    return _tally_problem(args.tally.split(','))
  if args.report_only:
    return None
  if not args.automl or not os.path.isfile(
      os.path.join(args.automl, 'main.py')):
    return ("--automl must be upstream's efficientnetv2/ folder (it holds "
            'main.py), prepared with: python patches/patchset.py upstream '
            'PATH')
  with open(os.path.join(args.automl, 'datasets.py'), encoding='utf-8') as f:
    if 'FashionMNISTInput' not in f.read():
      return (f'{args.automl} has no Fashion-MNIST input: run python '
              f'patches/patchset.py upstream {args.automl} first.')
  if not args.legacy_python or not os.access(args.legacy_python, os.X_OK):
    return ('--legacy_python must be the python of the environment from '
            'patches/upstream-requirements.txt.')
  if not args.tfds_data_dir or not os.path.isdir(
      os.path.join(args.tfds_data_dir, 'fashion_mnist')):
    return ('--tfds_data_dir must hold fashion_mnist: python '
            'patches/upstream_data.py --tfds_data_dir DIR prepares it.')
  return None


def total_steps(epochs):
  # Upstream's main.py: epochs * images // batch (the port agrees).
  return epochs * TRAIN_IMAGES // BATCH


def stage_ends(epochs, stages=3):
  steps = total_steps(epochs)
  return [int(steps * (k + 1) / stages) for k in range(stages)]


def read_events(path):
  """The whole records of one event file. A file still being written, or
  cut by a stopped run (SIGTERM), may end in a partial record: left out."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  events = tf.compat.v1.train.summary_iterator(path)
  while True:
    try:
      yield next(events)
    except (StopIteration, tf.errors.DataLossError):
      return


def read_scalars(folder):
  """{tag: [(step, wall_time, value)]} from the event files in a folder."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in sorted(glob.glob(os.path.join(folder, 'events.out.*'))):
    for event in read_events(path):
      for value in event.summary.value:
        number = (tf.make_ndarray(value.tensor)
                  if value.HasField('tensor') else value.simple_value)
        if getattr(number, 'dtype', None) is not None and (
            number.dtype.kind not in 'fiub' or number.size != 1):
          continue  # Not a number: upstream's eval logs its checkpoint path.
        scalars.setdefault(value.tag, []).append(
            (int(event.step), float(event.wall_time), float(number)))
  return {tag: sorted(points) for tag, points in scalars.items()}


def latest_step(folder, tag):
  """The highest step logged for `tag` in a folder's event files so far, or
  -1 (a partial record being written is read on the next look)."""
  latest = -1
  for path in glob.glob(os.path.join(folder, 'events.out.*')):
    for event in read_events(path):
      if any(value.tag == tag for value in event.summary.value):
        latest = max(latest, int(event.step))
  return latest


def window_means(points, ends):
  """Mean of per-step values over (previous end, end] for each end."""
  means, start = [], 0
  for end in ends:
    values = [v for s, _, v in points if start < s <= end]
    means.append(sum(values) / len(values) if values else None)
    start = end
  return means


def steady_rates(rates, ends):
  """Median images/s per stage, without each stage's first interval (it
  includes building, tracing or restoring)."""
  per_stage, start = [], 0
  for end in ends:
    inside = [r for s, r in rates if start < s <= end]
    per_stage.append(statistics.median(inside[1:]) if len(inside) > 1
                     else None)
    start = end
  return per_stage


def sizes_by_stage(points, ends):
  """The training image sizes logged within each stage."""
  found, start = [], 0
  for end in ends:
    found.append(sorted({int(v) for s, v in points if start < s <= end}))
    start = end
  return found


def run_phase(name, command, folder, cwd, env=None, stop=None):
  """Runs one phase (train or eval) of a run unless phases.json records it
  done; returns (exit code, its seconds). `stop`: see run_logged."""
  path = os.path.join(folder, 'phases.json')
  done = {}
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      done = json.load(f)
  if name in done:
    return 0, done[name]
  code, seconds = run_logged(command, os.path.join(folder, 'log.txt'), cwd,
                             env, stop)
  if code == 0:
    done[name] = seconds
    with open(path, 'w', encoding='utf-8') as f:
      json.dump(done, f)
  return code, seconds


def run_logged(command, log_path, cwd, env=None, stop=None):
  """Runs `command` with its output appended to log_path; returns (exit
  code, seconds). With `stop` (a function of no arguments), the command is
  sent SIGTERM once stop() is true, and a command stopped so counts as a
  success."""
  start = time.time()
  with open(log_path, 'a', encoding='utf-8') as log:
    log.write(f'$ {" ".join(command)}\n')
    log.flush()
    proc = subprocess.Popen(command, cwd=cwd, stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    stopped = False
    while proc.poll() is None:
      if stop is not None and stop():
        stopped = True
        proc.send_signal(signal.SIGTERM)
        try:
          proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
        log.write(f'stopped by {os.path.basename(__file__)}\n')
        break
      time.sleep(STOP_POLL_SECONDS if stop is not None else 1)
  return (0 if stopped else proc.returncode), time.time() - start


def stopper(args, folder, tag, offset=0):
  """The `stop` of a prefix run (None for a whole run): true once `tag`
  in folder's event files has reached --stop_after_step (after adding
  `offset` to its steps)."""
  if not args.stop_after_step:
    return None
  return lambda: latest_step(folder, tag) + offset >= args.stop_after_step


def train_upstream(args, mode, folder):
  hparams = f'train.epochs={args.epochs}'
  common = [args.legacy_python, 'main.py', '--use_tpu=false',
            '--dataset_cfg=fashion_mnist', f'--data_dir={args.tfds_data_dir}',
            f'--model_dir={folder}', f'--hparam_str={hparams}']
  code, train_seconds = run_phase(
      'train', common + ['--mode=train', f'--ablation={mode}'], folder,
      args.automl, stop=stopper(args, folder, 'loss/xent', offset=1))
  if code:
    return None
  evals = None
  if not args.stop_after_step:
    code, eval_seconds = run_phase('eval', common + ['--mode=eval'], folder,
                                   args.automl)
    if code:
      return None
    evals = read_scalars(os.path.join(folder, 'eval'))
  scalars = read_scalars(folder)
  # Upstream's per-step summaries carry the step before the update; here
  # steps count updates done, as the port's do.
  for tag in ('loss/xent', 'train/lr', 'model/resolution'):
    scalars[tag] = [(s + 1, t, v) for s, t, v in scalars[tag]]
  ends = stage_ends(args.epochs)
  step_rates = [(s, v * BATCH) for s, _, v in scalars['global_step/sec']]
  return {
      'top1': evals['eval/acc_top1'][-1][2] if evals else None,
      'eval_step': evals['eval/acc_top1'][-1][0] if evals else None,
      'stopped_at_step': (scalars['loss/xent'][-1][0]
                          if args.stop_after_step else None),
      'process_seconds': train_seconds,
      'eval_process_seconds': eval_seconds if evals else None,
      'images_per_second_by_stage': steady_rates(step_rates, ends),
      'xent': scalars['loss/xent'],
      'lr': [(s, v) for s, _, v in scalars['train/lr']],
      'sizes_by_stage': sizes_by_stage(
          [(s, v) for s, _, v in scalars['model/resolution']], ends),
  }


def upstream_initial_weights(output_dir, mode, seed):
  """The checkpoint upstream's run of `mode` and `seed` started from."""
  return os.path.join(os.path.abspath(output_dir), 'upstream', mode,
                      f'seed_{seed}', 'model.ckpt-0')


def train_port(args, mode, seed, folder):
  hparams = (f'train.epochs={args.epochs},runtime.seed={seed},'
             f'{UPSTREAM_AUGMENTATION}')
  if args.port_hparams:
    hparams += ',' + args.port_hparams
  if args.same_init:
    initial = upstream_initial_weights(args.output_dir, mode, seed)
    if not os.path.isfile(initial + '.index'):
      print(f'--same_init: {initial} is missing; upstream\'s run of this '
            'mode and seed must finish first (run the command again)',
            flush=True)
      return None
    hparams += f',train.ft_init_ckpt={initial},train.ft_init_ema=False'
  command = [sys.executable, '-m', 'automl_effnetv2.main', '--mode=train',
             '--dataset_cfg=fashion_mnist', f'--ablation={mode}',
             f'--model_dir={folder}', f'--hparam_str={hparams}']
  env = dict(os.environ, PYTHONPATH=REPO)
  code, seconds = run_phase(
      'train', command, folder, REPO, env,
      stop=stopper(args, os.path.join(folder, 'train'), 'train/xent'))
  if code:
    return None
  final = {}
  if not args.stop_after_step:
    with open(os.path.join(folder, 'metrics.json'), encoding='utf-8') as f:
      final = json.load(f)['final']
  scalars = read_scalars(os.path.join(folder, 'train'))
  ends = stage_ends(args.epochs)
  rates = [(s, v) for s, _, v in scalars['train/images_per_second']]
  return {
      'top1': final.get('eval/acc_top1'),
      'eval_step': final.get('global_step'),
      'stopped_at_step': (scalars['train/xent'][-1][0]
                          if args.stop_after_step else None),
      'process_seconds': seconds,
      'train_seconds': final.get('train_seconds'),
      'images_per_second_by_stage': steady_rates(rates, ends),
      # Means over each log interval already (64 steps or a stage's end).
      'xent_windows': [(s, v) for s, _, v in scalars['train/xent']],
      'lr': [(s, v) for s, _, v in scalars['train/learning_rate']],
      'sizes_by_stage': sizes_by_stage(
          [(s, v) for s, _, v in scalars['train/image_size']], ends),
  }


def run_all(args):
  modes = args.modes.split(',')
  sides = [side for side in SIDES if side in args.sides.split(',')]
  for seed in range(args.first_seed, args.first_seed + args.seeds):
    for mode in modes:
      for side in sides:
        folder = os.path.join(args.output_dir, side, mode, f'seed_{seed}')
        summary_path = os.path.join(folder, 'summary.json')
        name = f'{side}/{mode}/seed_{seed}'
        if os.path.exists(summary_path):
          print(f'{name}: done, skipped', flush=True)
          continue
        if os.path.isdir(folder) and not os.path.exists(
            os.path.join(folder, 'phases.json')):
          shutil.rmtree(folder)  # Training did not finish: start over.
        os.makedirs(folder, exist_ok=True)
        print(f'{name}: training in {folder}', flush=True)
        summary = (train_upstream(args, mode, folder) if side == 'upstream'
                   else train_port(args, mode, seed, folder))
        if summary is None:
          print(f'{name}: failed; its log is {folder}/log.txt', flush=True)
          return 1
        summary.update(side=side, mode=mode, seed=seed, epochs=args.epochs)
        with open(summary_path, 'w', encoding='utf-8') as f:
          json.dump(summary, f)
        outcome = (f"stopped at step {summary['stopped_at_step']}"
                   if args.stop_after_step else
                   f"top-1 {100 * summary['top1']:.2f} %")
        print(f"{name}: {outcome} in {summary['process_seconds']:.0f} s",
              flush=True)
  return 0


def cross_evaluate(output_dir):
  """Adds `port_eval_top1` to every upstream summary that lacks it: the
  port's evaluation of the run's last checkpoint, EMA weights, on the
  recipe's eval split at its eval size."""
  sys.path.insert(0, REPO)
  # pylint: disable=import-outside-toplevel
  import tempfile
  import tensorflow as tf
  from automl_effnetv2 import pretrained
  from automl_effnetv2 import run_config
  from automl_effnetv2 import train_lib
  config = run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                                   UPSTREAM_AUGMENTATION)
  trainer, work = None, tempfile.mkdtemp(prefix='cross_eval_')
  try:
    for path in sorted(glob.glob(os.path.join(output_dir, 'upstream', '*',
                                              'seed_*', 'summary.json'))):
      with open(path, encoding='utf-8') as f:
        summary = json.load(f)
      if 'port_eval_top1' in summary:
        continue
      if trainer is None:
        trainer = train_lib.Trainer(config, work)
        size = trainer.eval_size
        trainer.model(tf.zeros([1, size, size, 3]), training=False)
      checkpoint = os.path.join(os.path.dirname(path),
                                f"model.ckpt-{summary['eval_step']}")
      pretrained.load_pretrained(trainer.model, checkpoint, use_ema=True)
      summary['port_eval_top1'] = trainer.evaluate(
          use_ema=False)['eval/acc_top1']
      with open(path, 'w', encoding='utf-8') as f:
        json.dump(summary, f)
      print(f"{os.path.dirname(path)}: upstream's evaluation "
            f"{100 * summary['top1']:.2f} %, the port's "
            f"{100 * summary['port_eval_top1']:.2f} %", flush=True)
  finally:
    shutil.rmtree(work, ignore_errors=True)


def load_summaries(output_dir):
  found = []
  for path in sorted(glob.glob(os.path.join(output_dir, '*', '*', 'seed_*',
                                            'summary.json'))):
    with open(path, encoding='utf-8') as f:
      found.append(json.load(f))
  return found


def xent_curve(summary, ends):
  """Train cross-entropy per port log interval ending at `ends`."""
  if 'xent_windows' in summary:
    by_step = dict(summary['xent_windows'])
    return [by_step.get(e) for e in ends]
  points = [(s, 0.0, v) for s, v in
            ((p[0], p[-1]) for p in summary['xent'])]
  return window_means(points, ends)


def switch_xent(curve, log_ends, switch):
  """Mean train cross-entropy from the first stage switch to the end of
  the first log interval that ends 64 or more steps after it, each log
  interval weighted by its steps; None if the run did not log that far."""
  later = [e for e in log_ends if e >= switch + 64]
  if not later:
    return None
  last = later[0]
  total = weight = 0.0
  start = 0
  for end, value in zip(log_ends, curve):
    if switch <= start and end <= last:
      if value is None:
        return None
      total += value * (end - start)
      weight += end - start
    start = end
  return total / weight


def _mean_or_none(values):
  values = [v for v in values if v is not None]
  return statistics.mean(values) if values else None


def _percent(value):
  return 'n/a' if value is None else f'{100 * value:.2f}'


def report(args):
  summaries = load_summaries(args.output_dir)
  if not summaries:
    bench_cli.fail(__file__, f'no finished runs in {args.output_dir}: run '
                   'without --report_only first.')
  # The port's log intervals (64 steps, cut at stage ends) as a whole port
  # run logged them, or as the port cuts them when there is none.
  whole = [s for s in summaries
           if s['side'] == 'port' and not s.get('stopped_at_step')]
  log_ends = [s for s, _ in whole[0]['xent_windows']] if whole else sorted(
      set(range(64, total_steps(args.epochs), 64)) |
      set(stage_ends(args.epochs)))
  cells = {}
  for s in summaries:
    cell = cells.setdefault(f"{s['mode']}/{s['side']}", {
        'mode': s['mode'], 'side': s['side'], 'runs': []})
    rates = s['images_per_second_by_stage']
    curve = xent_curve(s, log_ends)
    if s.get('stopped_at_step'):  # No partial interval past the stop.
      curve = [v if end <= s['stopped_at_step'] else None
               for end, v in zip(log_ends, curve)]
    cell['runs'].append({
        'seed': s['seed'], 'top1': s['top1'], 'eval_step': s['eval_step'],
        'stopped_at_step': s.get('stopped_at_step'),
        'port_eval_top1': s.get('port_eval_top1'),
        'process_seconds': s['process_seconds'],
        'images_per_second_by_stage': rates,
        'last_stage_xent': _mean_or_none(curve[-(len(curve) // 3):]),
        'switch_xent': switch_xent(curve, log_ends,
                                   stage_ends(args.epochs)[0]),
        'xent_curve': curve})
  for cell in cells.values():
    runs = cell['runs']
    tops = [r['top1'] for r in runs if r['top1'] is not None]
    cell['top1_mean'] = statistics.mean(tops) if tops else None
    cell['top1_range'] = [min(tops), max(tops)] if tops else None
    cell['process_seconds_mean'] = statistics.mean(
        r['process_seconds'] for r in runs)
    cell['images_per_second_by_stage_mean'] = [
        _mean_or_none(v) for v in zip(*(r['images_per_second_by_stage']
                                        for r in runs))]
    cell['last_stage_xent_mean'] = _mean_or_none(
        r['last_stage_xent'] for r in runs)
    cell['switch_xent_mean'] = _mean_or_none(r['switch_xent'] for r in runs)
  results = {'epochs': args.epochs, 'log_steps': log_ends, 'cells': cells}
  os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
  with open(args.results + '.json', 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=1)
  plot(results, args.results + '.png')
  number = lambda v, form: 'n/a' if v is None else format(v, form)
  for name, cell in sorted(cells.items()):
    rates = ', '.join(number(r, '.0f') for r in
                      cell['images_per_second_by_stage_mean'])
    tops = ', '.join(_percent(r['top1']) for r in cell['runs'])
    switch = ', '.join(number(r['switch_xent'], '.2f') for r in cell['runs'])
    print(f"{name:28s} top-1 {tops} (mean {_percent(cell['top1_mean'])} %); "
          f"train xent after the first switch {switch}; "
          f"images/s by stage {rates}; last-third train xent "
          f"{number(cell['last_stage_xent_mean'], '.4f')}; "
          f"{cell['process_seconds_mean']:.0f} s per run")
  print(f'wrote {args.results}.json and {args.results}.png')
  return 0


def fisher_exact(a, b, c, d):
  """Two-sided p of Fisher's exact test on the table [[a, b], [c, d]]: the
  chance, with the margins fixed, of a table no more likely than this."""
  rows, column, total = a + b, a + c, a + b + c + d
  chance = lambda k: (math.comb(column, k) * math.comb(total - column,
                                                       rows - k) /
                      math.comb(total, rows))
  observed = chance(a)
  ks = range(max(0, rows + column - total), min(rows, column) + 1)
  return min(1.0, sum(chance(k) for k in ks
                      if chance(k) <= observed * (1 + 1e-9)))


def rank_sum_exact(a, b):
  """Two-sided p of the Wilcoxon rank-sum (Mann-Whitney) test, exact: the
  chance, over every split of the pooled values into groups of len(a) and
  len(b), that a's rank sum lies at least as far from its mean as observed.
  Ties get their mean rank."""
  pooled = sorted(list(a) + list(b))
  # Doubled mean ranks: integers, so the sums can index a table.
  doubled = {v: 2 * pooled.index(v) + pooled.count(v) + 1
             for v in set(pooled)}
  ranks = [doubled[v] for v in pooled]
  n, total = len(a), len(pooled)
  # ways[k][s]: how many k-element subsets of the ranks sum to s.
  top = sum(ranks)
  ways = [[0] * (top + 1) for _ in range(n + 1)]
  ways[0][0] = 1
  for rank in ranks:
    for k in range(n, 0, -1):
      for s in range(top, rank - 1, -1):
        ways[k][s] += ways[k - 1][s - rank]
  centre = n * (total + 1)  # The mean of a's doubled rank sum.
  observed = abs(sum(doubled[v] for v in a) - centre)
  extreme = sum(count for s, count in enumerate(ways[n])
                if abs(s - centre) >= observed)
  return extreme / math.comb(total, n)


def _tally_problem(paths):
  """Why these reports cannot be tallied (one line), or None."""
  for path in paths:
    if not os.path.isfile(path):
      return f'--tally: no report at {path}.'
    try:
      with open(path, encoding='utf-8') as f:
        epochs = json.load(f)['epochs']
    except (ValueError, KeyError, TypeError):
      return (f'--tally: {path} is not a report of this script (write one '
              'with --report_only).')
    if epochs != RECOVERED_EPOCHS:
      return (f'--tally: {path} is a report of {epochs}-epoch runs; the '
              f'boundary {RECOVERED_BELOW} was read off {RECOVERED_EPOCHS}-'
              f'epoch runs, so only those are counted.')
  return None


def recovered(values):
  """How many of these `switch_xent` values are below RECOVERED_BELOW."""
  return sum(v < RECOVERED_BELOW for v in values)


def tally(paths):
  """Counts, per side, the `none` runs of these reports that recovered
  from the first switch; prints them and Fisher's p."""
  counts, seen = {}, set()
  for path in paths:
    with open(path, encoding='utf-8') as f:
      results = json.load(f)
    switch = stage_ends(results['epochs'])[0]
    for cell in results['cells'].values():
      if cell['mode'] != 'none':
        continue
      for run in cell['runs']:
        # From the curve, so that reports written before `switch_xent`
        # existed count too.
        value = switch_xent(run['xent_curve'], results['log_steps'], switch)
        key = (cell['side'], json.dumps(run['xent_curve']))
        if value is None or key in seen:
          continue
        seen.add(key)
        counts.setdefault(cell['side'], []).append(value)
  for side in SIDES:
    values = counts.get(side, [])
    listed = ', '.join(f'{v:.2f}' for v in values)
    print(f'{side}: {recovered(values)} of {len(values)} none runs below '
          f'{RECOVERED_BELOW} after the first switch ({listed})')
  if all(counts.get(side) for side in SIDES):
    up, port = counts['upstream'], counts['port']
    p = fisher_exact(recovered(up), len(up) - recovered(up),
                     recovered(port), len(port) - recovered(port))
    print(f"Fisher's exact test, two-sided: p = {p:.3f}")
    print('the values themselves, Wilcoxon rank-sum test (exact, '
          f'two-sided): p = {rank_sum_exact(up, port):.3f}; medians '
          f'{statistics.median(up):.2f} (upstream), '
          f'{statistics.median(port):.2f} (port)')
  return 0


def plot(results, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  modes = sorted({c['mode'] for c in results['cells'].values()})
  fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4),
                           sharey=True, squeeze=False)
  steps = results['log_steps']
  for axis, mode in zip(axes[0], modes):
    for side, color in (('upstream', 'tab:orange'), ('port', 'tab:blue')):
      cell = results['cells'].get(f'{mode}/{side}')
      if not cell:
        continue
      nan = lambda values: [math.nan if v is None else v for v in values]
      for run in cell['runs']:
        axis.plot(steps, nan(run['xent_curve']), color=color, lw=0.6,
                  alpha=0.5)
      mean = [_mean_or_none(v) for v in zip(*(r['xent_curve']
                                              for r in cell['runs']))]
      label = side if cell['top1_mean'] is None else (
          f"{side}: top-1 {100 * cell['top1_mean']:.2f} %")
      axis.plot(steps, nan(mean), color=color, lw=1.6, label=label)
    axis.set_title(f'--ablation={mode}')
    axis.set_xlabel('step')
    axis.legend()
  axes[0][0].set_ylabel('train cross-entropy (mean per log interval)')
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def main(argv=None):
  args = parse_args(argv)
  problem = check_args(args)
  if problem:
    bench_cli.fail(__file__, problem)
  if args.tally:
    return tally(args.tally.split(','))
  if not args.report_only:
    code = run_all(args)
    if code:
      return code
  if args.cross_eval:
    cross_evaluate(args.output_dir)
  return report(args)


if __name__ == '__main__':
  sys.exit(main())
