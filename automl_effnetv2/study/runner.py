r"""Runs the progressive-learning study: configs x ablation modes x seeds.

  python -m automl_effnetv2.ablation \
      --dataset_cfg=fashion_mnist,fashion_mnist_paper_range \
      --modes=none,no_progressive,fixed_regularization --seeds=3 \
      --epochs=12 --output_dir=runs/study --results_dir=docs/study

Each run is `main.py --mode=traineval --ablation=<mode>` in its own process
and folder, <output_dir>/<config>/<mode>/seed_<k> (checkpoints; large), with
an evaluation every `--eval_every_epochs` for its time-to-accuracy curve.
Runs go seed-major (every config and mode at seed 0, then at seed 1, ...) so
that drifts of the machine's speed hit every mode alike. When a run finishes
its small files (metrics.json, config.yaml) are copied to
<results_dir>/runs/<config>/<mode>/seed_<k>, and the report is rebuilt from
those copies alone (report.py): rerunning the command skips every run
whose copy is there and resumes the one in progress, on this machine or on
another with the same results folder.

Two cells that would train exactly the same run (the same config apart from
how the stages are cut, the same effective schedule: for example two
configs' `no_progressive` runs when they share the final size and
regularization) are run once; the report lists the run under both.

Before the first run, one paired benchmark times a training step at every
image size the runs use (step_times.py); a run's normalized time is its
steps per stage times those step times.
"""
import dataclasses
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from automl_effnetv2 import cli
from automl_effnetv2 import progressive
from automl_effnetv2 import run_dir
from automl_effnetv2.study import clocks
from automl_effnetv2.study import answers
from automl_effnetv2.study import report

FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags; defined only when run as a program, so that
  importing this module next to main.py (which has flags of the same
  names) works."""
  flags.DEFINE_list('dataset_cfg', ['fashion_mnist'], 'Training config(s), '
                    'comma-separated: one panel of the report each.')
  flags.DEFINE_string('model_name', 'efficientnetv2-b0', 'Model name.')
  flags.DEFINE_list('modes', ['none', 'no_progressive'], 'Ablation modes, from '
                    + ', '.join(progressive.ABLATIONS) + '.')
  flags.DEFINE_integer('seeds', 2, 'Runs per cell (seeds 0..seeds-1).')
  flags.DEFINE_float('epochs', None, 'Overrides train.epochs for every run '
                     '(the same for all, so that runs compare).')
  flags.DEFINE_float('eval_every_epochs', 1.0, 'Evaluation interval during '
                     'training, for the time-to-accuracy curves (0: stage ends '
                     'only).')
  flags.DEFINE_string('hparam_str', '', 'Extra overrides for every run.')
  flags.DEFINE_string('data_dir', None, 'As main.py --data_dir.')
  flags.DEFINE_string('output_dir', None, 'Where the run folders go.')
  flags.DEFINE_string('results_dir', None, 'Where each finished run\'s small '
                      'files and the report go (default: <output_dir>/results).')
  flags.DEFINE_bool('step_times', True, 'Measure step times per image size '
                    'before the first run (once; kept in results_dir) for the '
                    'normalized training time.')
  flags.DEFINE_integer('step_time_steps', 20, 'Steps per timed call of the '
                       'step-time benchmark.')
  flags.DEFINE_integer('step_time_rounds', 3, 'Rounds of the step-time '
                       'benchmark.')
  flags.DEFINE_string('equal_time_to', None, 'A mode of --modes: it trains '
                      '--epochs, and every other mode as many epochs as give '
                      'it the same normalized training time (its stages and '
                      'schedule stretched over the longer run).')
  flags.DEFINE_string('step_times_from', None, 'A step_times.json to use '
                      '(for example another study\'s, so that both share one '
                      'normalized clock) instead of measuring.')
  flags.DEFINE_list('reuse_from', [], 'Results folders of other studies: a '
                    'run whose assembled config equals one finished there is '
                    'copied from it, not trained again.')
  flags.DEFINE_bool('report_only', False, 'Rebuild the report from '
                    'results_dir and stop.')
  flags.DEFINE_list('combine', [], 'With --report_only: results folders of '
                    'other studies, whose reports are rebuilt too and whose '
                    'answers join this one\'s in one table (--answers_to).')
  flags.DEFINE_string('answers_to', None, 'With --report_only: a markdown '
                      'file whose block between "<!-- begin: answers -->" and '
                      '"<!-- end: answers -->" becomes the table of every '
                      'study\'s progressive-learning answer.')
  flags.DEFINE_bool('commit_results', False, 'git-commit results_dir after '
                    'each finished run (results_dir inside a git repository).')


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run of the grid."""
  dataset_cfg: str
  mode: str
  seed: int

  @property
  def name(self) -> str:
    return f'{self.dataset_cfg}/{self.mode}/seed_{self.seed}'


def grid_order(dataset_cfgs: Sequence[str], modes: Sequence[str],
               seeds: int) -> List[Cell]:
  """Seed-major: all configs and modes at seed 0, then seed 1, ..."""
  return [Cell(cfg, mode, seed) for seed in range(seeds)
          for cfg in dataset_cfgs for mode in modes]


def run_overrides(seed: int, epochs: Optional[float], eval_every_epochs: float,
                  hparam_str: str) -> str:
  """The run's overrides; the runner's own settings come last, so that
  --hparam_str cannot undo a seed, --epochs or an equal-time length."""
  overrides = [hparam_str] if hparam_str else []
  overrides.append(f'runtime.seed={seed}')
  if epochs is not None:
    overrides.append(f'train.epochs={epochs:.6g}')
  if eval_every_epochs:
    overrides.append(f'eval.every_epochs={eval_every_epochs:g}')
  return ','.join(overrides)


def run_command(cell: Cell, model_dir: str, model_name: str, overrides: str,
                data_dir: Optional[str]) -> List[str]:
  command = [sys.executable, '-m', 'automl_effnetv2.main',
             '--mode=traineval', f'--ablation={cell.mode}',
             f'--dataset_cfg={cell.dataset_cfg}', f'--model_name={model_name}',
             f'--model_dir={model_dir}', f'--hparam_str={overrides}']
  if data_dir:
    command.append(f'--data_dir={data_dir}')
  return command


# -- runs that are the same run --------------------------------------------
# How the stages are cut is not part of what a run trains once the effective
# schedule is known; everything else in the config is.
_CUT_KEYS = ('train.stages', 'data.ibase')


def effective_schedule(config) -> Tuple[Tuple, ...]:
  """The stages after the ablation, neighbours with equal settings merged:
  (last step, size, magnitude, mixup, cutmix, dropout) per merged stage."""
  merged = []
  for stage in progressive.run_plan(config).stages:
    settings = (stage.image_size, stage.ram, stage.mixup_alpha,
                stage.cutmix_alpha, stage.dropout_rate)
    if merged and merged[-1][1:] == settings:
      merged[-1] = (stage.max_steps,) + settings
    else:
      merged.append((stage.max_steps,) + settings)
  return tuple(merged)


def run_signature(config, added_keys: Sequence[str] = ()) -> Tuple:
  """What a run trains. `added_keys`: keys of the current config that an
  older saved one lacks; they count as None there (see reusable_runs)."""
  flat = run_dir.flatten(config.as_dict())
  for key in added_keys:
    flat.setdefault(key, None)
  rest = tuple(sorted((k, repr(v)) for k, v in flat.items()
                      if k not in _CUT_KEYS))
  return effective_schedule(config), rest


def shared_runs(cells: Sequence[Cell], build) -> Dict[Cell, Cell]:
  """Maps each cell to the first cell (in grid order) that trains the same
  run; `build(cell)` returns the cell's assembled config."""
  first_by_signature, owner = {}, {}
  for cell in cells:
    signature = run_signature(build(cell))
    owner[cell] = first_by_signature.setdefault(signature, cell)
  return owner


def finished_runs(results_dirs: Sequence[str]) -> List[str]:
  """Folders of the finished runs in other studies' results folders."""
  found = []
  for results_dir in results_dirs:
    runs = os.path.join(results_dir, 'runs')
    for folder, _, names in sorted(os.walk(runs)):
      if (run_dir.CONFIG_FILE in names and
          report.is_finished(folder)):
        found.append(folder)
  return found


def reusable_run(config, folders: Sequence[str]) -> Optional[str]:
  """The first of `folders` whose saved config trains what `config` would.

  A key the saved config lacks was added to the port after that run; when
  the current config leaves it None it switches nothing on, so it matches.
  """
  from automl_effnetv2 import hparams  # pylint: disable=g-import-not-at-top
  current = run_dir.flatten(config.as_dict())
  for folder in folders:
    saved = hparams.Config(hparams.load_yaml(
        os.path.join(folder, run_dir.CONFIG_FILE)))
    saved_keys = run_dir.flatten(saved.as_dict())
    added = [k for k, v in current.items() if k not in saved_keys and v is None]
    if run_signature(saved, added) == run_signature(config):
      return folder
  return None


# -- running ------------------------------------------------------------------
def copy_results(model_dir: str, destination: str):
  """Copies a finished run's small files (atomically, folder by folder)."""
  staging = destination + '.tmp'
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  for name in report.RUN_FILES:
    shutil.copy(os.path.join(model_dir, name), staging)
  shutil.rmtree(destination, ignore_errors=True)
  os.replace(staging, destination)


def commit(results_dir: str, message: str):
  """Commits results_dir alone; a failure is reported, never fatal.

  Nothing new to commit (the final report equals the last run's) is not a
  failure: git's own exit status would say so, hence the staged-diff check.
  """
  def git(*args):
    return subprocess.run(['git', '-C', results_dir, *args],
                          capture_output=True, text=True, check=False)
  if git('add', '.').returncode == 0:
    if git('diff', '--cached', '--quiet', '--', '.').returncode == 0:
      return
    if git('commit', '-q', '-m', message, '--', '.').returncode == 0:
      return
  print(f'note: could not commit {results_dir}; commit it by hand',
        file=sys.stderr, flush=True)


def ensure_step_times(path: str, cells: Sequence[Cell], build, data_dir,
                      steps: int, rounds: int, env) -> None:
  """Runs the paired step-time benchmark once for every size the runs use."""
  if os.path.exists(path):
    return
  sizes = sorted({schedule[1] for cell in cells
                  for schedule in effective_schedule(build(cell))})
  first = cells[0]
  command = [sys.executable, '-m', 'automl_effnetv2.study.step_times',
             f'--dataset_cfg={first.dataset_cfg}',
             f'--model_name={FLAGS.model_name}',
             f'--sizes={",".join(str(s) for s in sizes)}',
             f'--steps={steps}', f'--rounds={rounds}', f'--output={path}']
  if FLAGS.hparam_str:
    command.append(f'--hparam_str={FLAGS.hparam_str}')
  if data_dir:
    command.append(f'--data_dir={data_dir}')
  print(f'timing a training step at {sizes} px ...', flush=True)
  log_path = path + '.log'
  with open(log_path, 'w', encoding='utf-8') as log:
    result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                            env=env, check=False)
  if result.returncode:
    print(f'error: the step-time benchmark failed (exit {result.returncode});'
          f' see {log_path}', file=sys.stderr)
    sys.exit(result.returncode)
  os.remove(log_path)


def _step_times(results_dir, cells, build, env) -> Optional[Dict]:
  """The study's step times: copied from --step_times_from, or measured
  once by the paired benchmark (with --step_times)."""
  path = os.path.join(results_dir, report.STEP_TIMES)
  if FLAGS.step_times_from and not os.path.exists(path):
    try:
      report.read_json(FLAGS.step_times_from)['seconds_per_step']
    except (OSError, ValueError, KeyError):
      cli.usage_error(f'--step_times_from={FLAGS.step_times_from} is not a '
                   'step-time file of a study (step_times.json); pass one')
    shutil.copy(FLAGS.step_times_from, path)
  elif FLAGS.step_times:
    ensure_step_times(path, cells, build, FLAGS.data_dir,
                      FLAGS.step_time_steps, FLAGS.step_time_rounds, env)
  return report.read_json(path) or None


def _report_answers(results_dir):
  """--combine and --answers_to: the other studies' reports, then the
  table of all their answers in the markdown file."""
  for folder in FLAGS.combine:
    if os.path.exists(os.path.join(folder, report.PLAN)):
      report.write_report(folder)
    else:
      print(f'{folder}: no study yet ({report.PLAN} is missing); its '
            'row says so')
  if FLAGS.answers_to:
    try:
      lines = answers.write_answers(FLAGS.answers_to,
                                          [results_dir] + FLAGS.combine)
    except (OSError, ValueError) as e:
      cli.usage_error(str(e))
    print('\n'.join(lines))
    print(f'wrote the answers table into {FLAGS.answers_to}')


def main(argv):
  del argv
  from automl_effnetv2 import run_config  # pylint: disable=g-import-not-at-top
  from automl_effnetv2 import hparams  # pylint: disable=g-import-not-at-top
  if not (FLAGS.output_dir or FLAGS.results_dir):
    cli.usage_error('--output_dir is required (run folders go there)')
  results_dir = FLAGS.results_dir or os.path.join(FLAGS.output_dir,
                                                  'results')
  if FLAGS.report_only:
    if not os.path.exists(os.path.join(results_dir, report.PLAN)):
      cli.usage_error(f'{results_dir} holds no study ({report.PLAN} is '
                   'missing); pass the --results_dir of a study')
    if FLAGS.answers_to and not os.path.isfile(FLAGS.answers_to):
      cli.usage_error(f'--answers_to={FLAGS.answers_to} is not a file; pass '
                   'the markdown file that holds the answers block')
    print('\n'.join(report.write_report(results_dir)))
    _report_answers(results_dir)
    return
  if not FLAGS.output_dir:
    cli.usage_error('--output_dir is required (run folders go there)')
  for mode in FLAGS.modes:
    try:
      progressive.check_ablation(mode)
    except ValueError as e:
      cli.usage_error(str(e))
  reference = FLAGS.equal_time_to
  if reference is not None and reference not in FLAGS.modes:
    cli.usage_error(f'--equal_time_to={reference} is not one of --modes '
                 f'({",".join(FLAGS.modes)}); add it there')
  for folder in FLAGS.reuse_from:
    if not os.path.isdir(os.path.join(folder, 'runs')):
      cli.usage_error(f'--reuse_from={folder} holds no finished runs (no runs/ '
                   'folder); pass the --results_dir of another study')
  cells = grid_order(FLAGS.dataset_cfg, FLAGS.modes, FLAGS.seeds)
  configs, epochs = {}, {}

  def assemble(cell, cell_epochs):
    return run_config.build_config(
        FLAGS.model_name, cell.dataset_cfg,
        run_overrides(cell.seed, cell_epochs, FLAGS.eval_every_epochs,
                      FLAGS.hparam_str), ablation=cell.mode)

  def build(cell):
    """The cell's assembled config, at its own length."""
    if cell not in configs:
      configs[cell] = assemble(cell, epochs.get(cell, FLAGS.epochs))
    return configs[cell]

  try:
    for cell in cells:
      build(cell)
    os.makedirs(results_dir, exist_ok=True)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    step_times = _step_times(results_dir, cells, build, env)
    if reference is not None:
      if not step_times:
        cli.usage_error('--equal_time_to needs step times: keep --step_times '
                     'on or pass --step_times_from')
      for cell in cells:
        if cell.mode != reference:
          base = configs[Cell(cell.dataset_cfg, reference, cell.seed)]
          epochs[cell] = clocks.equal_time_epochs(
              configs[cell], base, step_times['seconds_per_step'])
          configs[cell] = assemble(cell, epochs[cell])
          print(f'{cell.name}: {epochs[cell]:g} epochs, the normalized '
                f'time of {reference} at {base.train.epochs:g}', flush=True)
    owner = shared_runs(cells, build)
  except (hparams.ConfigError, ValueError) as e:
    cli.usage_error(str(e))
  report.save_plan(results_dir, cells, owner, sys.argv[1:])
  elsewhere = finished_runs(FLAGS.reuse_from)
  for cell in cells:
    if owner[cell] != cell:
      print(f'{cell.name}: the same run as {owner[cell].name}', flush=True)
      continue
    kept = os.path.join(results_dir, 'runs', cell.name)
    if report.is_finished(kept):
      print(f'{cell.name}: finished, skipped', flush=True)
      continue
    model_dir = os.path.join(FLAGS.output_dir, cell.name)
    reused = reusable_run(build(cell), elsewhere)
    if reused:
      print(f'{cell.name}: the same run as {reused}, copied', flush=True)
      copy_results(reused, kept)
    else:
      train(cell, model_dir, env, epochs.get(cell, FLAGS.epochs))
      copy_results(model_dir, kept)
    report.write_report(results_dir)
    if FLAGS.commit_results:
      commit(results_dir, f'study: {cell.name} finished')
  print('\n'.join(report.write_report(results_dir)))
  if FLAGS.commit_results:
    commit(results_dir, 'study: report')


def train(cell: Cell, model_dir: str, env, epochs: Optional[float]):
  """Trains (or resumes) one run in its own process; exits on failure."""
  os.makedirs(model_dir, exist_ok=True)
  if report.is_finished(model_dir):
    return
  print(f'{cell.name}: training in {model_dir}', flush=True)
  started = time.time()
  overrides = run_overrides(cell.seed, epochs, FLAGS.eval_every_epochs,
                            FLAGS.hparam_str)
  with open(os.path.join(model_dir, 'log.txt'), 'a', encoding='utf-8') as log:
    result = subprocess.run(
        run_command(cell, model_dir, FLAGS.model_name, overrides,
                    FLAGS.data_dir),
        stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
  if result.returncode:
    print(f'{cell.name}: failed (exit {result.returncode}); see '
          f'{model_dir}/log.txt. Rerun the same command to resume.',
          file=sys.stderr)
    sys.exit(result.returncode)
  print(f'{cell.name}: done in {time.time() - started:.0f} s', flush=True)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
