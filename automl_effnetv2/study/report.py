"""The study's report, rebuilt from the small files each finished run left.

Input (a results folder, small enough to commit):
  plan.json                 the grid: cells in run order, shared runs, command
  step_times.json           seconds per training step at each image size
  runs/<cfg>/<mode>/seed_k/ metrics.json and config.yaml of each finished run
Output, in the same folder:
  results.csv   one row per cell and seed (final top-1, times, images/s)
  curves.csv    one row per evaluation (step, epoch, the clocks, top-1)
  results.md    the tables, computed from the two CSV files alone
  results.png   mean eval top-1 against normalized time, one panel per
                config, and below it the last 20 % of training enlarged

Clocks (clocks.py): `train_seconds` is what the run measured inside
its training loops (evaluation excluded); its normalized time is the steps
it trained at each image size times the step time at that size from one
paired benchmark, so that a machine busy with something else cannot fake a
speedup; its multiply-adds (multiply_adds.json, counted on the model by
flops.py) are the clock of hardware whose cost follows arithmetic.
"""
import csv
import json
import math
import os
import statistics
from typing import Dict, List, Optional, Sequence

from automl_effnetv2 import hparams
from automl_effnetv2 import progressive
from automl_effnetv2 import run_dir
from automl_effnetv2.study import clocks
from automl_effnetv2.study import stats

RUN_FILES = (run_dir.METRICS_FILE, run_dir.CONFIG_FILE)
STEP_TIMES = clocks.STEP_TIMES
PLAN = 'plan.json'
BASELINE = 'no_progressive'
# Progressive learning as upstream runs it, and plain progressive resizing
# (sizes rise, regularization held at its final strength): their top-1
# difference is the paper's gain from adaptive regularization.
PROGRESSIVE = 'none'
RESIZING_ONLY = 'fixed_regularization'
# The paper's ImageNet numbers the report sets the results beside.
PAPER_SPEEDUP = ('about 1.4x (ResNet-50, 224 px), 2.1x (ResNet-152), '
                 '2.2x (EfficientNet-B4, 380 px)')
PAPER_GAIN = 'about +0.5 to +0.7 points (ResNet-50, mean of 3 runs)'
# Measured and normalized speedups further apart than this are flagged.
DISAGREEMENT = 0.10

RESULT_FIELDS = ('config', 'mode', 'seed', 'run', 'top1', 'top5',
                 'global_step', 'total_steps', 'epochs', 'train_seconds',
                 'normalized_seconds', 'multiply_adds', 'images_per_second',
                 'steps_per_size')
CURVE_FIELDS = ('config', 'mode', 'seed', 'global_step', 'epoch',
                'train_seconds', 'normalized_seconds', 'multiply_adds',
                'top1', 'steps_per_size')
# The clocks a speedup is read on: what the run measured, the benchmark's
# step times (redrawn from its rounds for the interval), and the model's
# forward multiply-adds (tera, 10^12).
CLOCKS = ('measured', 'normalized', 'multiply-adds')
_CLOCK_COLUMN = {'measured': 'train_seconds',
                 'normalized': 'normalized_seconds',
                 'multiply-adds': 'multiply_adds'}


def read_json(path) -> Dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def is_finished(run_folder) -> bool:
  final = run_dir.read_metrics(run_folder).get('final', {})
  return bool(final) and final.get('global_step') == final.get('total_steps')


def save_plan(results_dir, cells, owner, argv: Sequence[str]):
  plan = {
      'command': ' '.join(['python -m automl_effnetv2.ablation'] +
                          list(argv)),
      'cells': [dict(config=c.dataset_cfg, mode=c.mode, seed=c.seed,
                     run=owner[c].name) for c in cells],
  }
  tmp = os.path.join(results_dir, PLAN + '.tmp')
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(plan, f, indent=2)
  os.replace(tmp, os.path.join(results_dir, PLAN))


# -- CSV files ------------------------------------------------------------------
def collect(results_dir):
  """Rows of results.csv and curves.csv from the finished runs' files."""
  plan = read_json(os.path.join(results_dir, PLAN))
  step_times = read_json(os.path.join(results_dir, STEP_TIMES)).get(
      'seconds_per_step')
  per_image = read_json(os.path.join(
      results_dir, clocks.MULTIPLY_ADDS)).get('multiply_adds_per_image')
  rows, curves = [], []
  for cell in plan.get('cells', []):
    folder = os.path.join(results_dir, 'runs', cell['run'])
    if not is_finished(folder):
      continue
    metrics = run_dir.read_metrics(folder)
    config = hparams.Config(hparams.load_yaml(
        os.path.join(folder, run_dir.CONFIG_FILE)))
    final = metrics['final']
    stages = progressive.run_plan(config, final['total_steps']).stages

    def clocks_at(step, stages=stages, batch=config.train.batch_size):
      return dict(
          normalized_seconds=(clocks.normalized_seconds(
              stages, step, step_times) if step_times else None),
          multiply_adds=(clocks.multiply_adds(
              stages, step, per_image, batch) / 1e12 if per_image else None),
          steps_per_size=clocks.format_steps(
              clocks.steps_per_size(stages, step)))

    key = dict(config=cell['config'], mode=cell['mode'], seed=cell['seed'])
    rows.append(dict(
        key, run=cell['run'], top1=final['eval/acc_top1'],
        top5=final['eval/acc_top5'], global_step=final['global_step'],
        total_steps=final['total_steps'], epochs=config.train.epochs,
        train_seconds=final['train_seconds'],
        images_per_second=final.get('train_images_per_second'),
        **clocks_at(final['global_step'])))
    steps_per_epoch = final['total_steps'] / config.train.epochs
    for record in metrics.get('evals', []):
      curves.append(dict(
          key, global_step=record['global_step'],
          epoch=record['global_step'] / steps_per_epoch,
          train_seconds=record['train_seconds'],
          top1=record['eval/acc_top1'], **clocks_at(record['global_step'])))
  return rows, curves


def write_csv(path, fields, rows):
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def read_csv(path) -> List[Dict]:
  numeric = ('seed', 'top1', 'top5', 'global_step', 'total_steps', 'epochs',
             'train_seconds', 'normalized_seconds', 'multiply_adds',
             'images_per_second', 'epoch')
  with open(path, newline='', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    for name in numeric:
      if name in row:
        row[name] = float(row[name]) if row[name] not in ('', None) else None
    if 'seed' in row:
      row['seed'] = int(row['seed'])
    row['steps'] = clocks.parse_steps(row.get('steps_per_size'))
  return rows


# -- statistics per config ----------------------------------------------------
def _by(rows, config, mode):
  return sorted((r for r in rows if r['config'] == config
                 and r['mode'] == mode), key=lambda r: r['seed'])


def clock_time(row, clock: str, step_times=None) -> Optional[float]:
  """A result or curve row's time on one of CLOCKS; `step_times`, a redrawn
  table, replaces the benchmark's medians on the normalized clock."""
  if clock == 'normalized' and step_times is not None:
    return clocks.weighed(row['steps'], step_times)
  return row[_CLOCK_COLUMN[clock]]


def _curve(curve_rows, config, mode, seed, clock, step_times=None):
  points = ((clock_time(r, clock, step_times), r['top1']) for r in curve_rows
            if r['config'] == config and r['mode'] == mode
            and r['seed'] == seed)
  return sorted(p for p in points if p[0] is not None)


def cell_summary(runs) -> Dict[str, Optional[float]]:
  top1 = [100 * r['top1'] for r in runs]
  mean, std, low, high = stats.mean_ci(top1)
  normalized = [r['normalized_seconds'] for r in runs]
  return dict(
      runs=len(runs), top1=mean, std=std, ci_low=low, ci_high=high,
      minutes=statistics.mean(r['train_seconds'] for r in runs) / 60,
      normalized_minutes=(statistics.mean(normalized) / 60
                          if None not in normalized else None),
      images_per_second=statistics.mean(r['images_per_second'] or 0
                                        for r in runs))


def format_top1(summary) -> str:
  """'91.00 ± 1.41 %'; a single run has no spread to show."""
  if summary['runs'] < 2:
    return f"{summary['top1']:.2f} % (one run)"
  return f"{summary['top1']:.2f} ± {summary['std']:.2f} %"


def _common_seeds(rows, config, modes) -> List[int]:
  """Seeds every one of `modes` has a finished run for."""
  return sorted(set.intersection(*[{r['seed'] for r in _by(rows, config, m)}
                                   for m in modes]))


def top1_difference(rows, config, mode, reference, seeds=None):
  """Mean final top-1 of `mode` minus `reference` in points, paired by seed.

  Over every seed both have a finished run for, or over `seeds` alone (those
  of them both have), so that a table row uses one set of seeds throughout.
  Returns (difference, (CI low, CI high), seeds); (None, (None, None), 0)
  while no seed has both runs.
  """
  common = _common_seeds(rows, config, (mode, reference))
  seeds = [s for s in common if seeds is None or s in seeds]
  if not seeds:
    return None, (None, None), 0
  finals = {m: {r['seed']: 100 * r['top1'] for r in _by(rows, config, m)}
            for m in (mode, reference)}
  diff, low, high = stats.paired_difference_ci(
      [finals[mode][s] for s in seeds], [finals[reference][s] for s in seeds])
  return diff, (low, high), len(seeds)


def compare_to_baseline(rows, curve_rows, config, modes, step_times=None,
                        resamples=4000):
  """Per mode: speedups over `no_progressive` and the top-1 difference.

  Speedup at equal epochs: mean baseline time / mean mode time, on each of
  CLOCKS. Time to target: the target is the lowest final mean top-1 among
  the config's modes; each mode's mean curve (over seeds) is read at that
  accuracy by linear interpolation. Intervals: percentile bootstrap over
  seeds, the same seeds drawn for every mode (seed k of every mode ran in one
  time slot); on the normalized clock each resample also redraws the
  benchmark's rounds (`step_times`, the whole step_times.json), so the
  interval carries the benchmark's own spread. The top-1 difference has a
  paired t interval.
  """
  seeds = _common_seeds(rows, config, modes)
  if BASELINE not in modes or len(seeds) == 0:
    return {}
  finals = {m: {r['seed']: r for r in _by(rows, config, m)} for m in modes}
  redrawn = (clocks.step_time_draws(step_times, resamples)
             if step_times else None)

  # Plain sums: statistics.mean's exact arithmetic is slow in a bootstrap.
  def target(draw):
    return min(sum(finals[m][seeds[i]]['top1'] for i in draw) / len(draw)
               for m in modes)

  def equal_epochs(mode, clock):
    def statistic(draw, table=None):
      base, ours = (sum(clock_time(finals[m][seeds[i]], clock, table)
                        for i in draw) / len(draw) for m in (BASELINE, mode))
      return base / ours if ours else None
    return statistic

  def to_target(mode, clock):
    def statistic(draw, table=None):
      goal = target(draw)
      times = []
      for m in (BASELINE, mode):
        curve = stats.mean_curve(
            [_curve(curve_rows, config, m, seeds[i], clock, table)
             for i in draw])
        times.append(stats.time_to_target(curve, goal))
      if None in times or not times[1]:
        return None
      return times[0] / times[1]
    return statistic

  everything = list(range(len(seeds)))
  out = {}
  for mode in modes:
    if mode == BASELINE:
      continue
    entry = {}
    for name, make in (('epochs', equal_epochs), ('target', to_target)):
      for clock in CLOCKS:
        if any(clock_time(finals[m][s], clock) is None
               for m in (BASELINE, mode) for s in seeds):
          continue
        statistic = make(mode, clock)
        entry[f'{name}_{clock}'] = statistic(everything)
        entry[f'{name}_{clock}_ci'] = stats.bootstrap_ci(
            statistic, len(seeds), resamples=resamples,
            also_drawn=redrawn if clock == 'normalized' else None)
    # The speedups' seeds: while one mode lacks a seed, the difference
    # leaves it out too, so that the row's seed count holds for every column.
    diff, interval, _ = top1_difference(rows, config, mode, BASELINE, seeds)
    entry.update(top1_diff=diff, top1_diff_ci=interval, seeds=len(seeds))
    for name in ('epochs', 'target'):
      measured = entry.get(f'{name}_measured')
      normalized = entry.get(f'{name}_normalized')
      entry[f'{name}_flag'] = bool(
          measured and normalized and
          abs(measured / normalized - 1.0) > DISAGREEMENT)
    out[mode] = entry
  out['_target'] = 100 * target(everything)
  return out


# -- Markdown and plot --------------------------------------------------------
def _num(value, digits=2, suffix=''):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '–'
  return f'{value:.{digits}f}{suffix}'


def _interval(pair, digits=2):
  low, high = pair if pair else (None, None)
  if low is None or high is None:
    return '–'
  return f'[{low:.{digits}f}, {high:.{digits}f}]'


def _seeds(count: int) -> str:
  return f"{count} seed{'' if count == 1 else 's'}"


def _ordered(values):
  seen = []
  for value in values:
    if value not in seen:
      seen.append(value)
  return seen


def tables(results_dir, rows, curve_rows) -> List[str]:
  plan = read_json(os.path.join(results_dir, PLAN))
  step_times = read_json(os.path.join(results_dir, STEP_TIMES)) or None
  cells = plan.get('cells', [])
  lines = [f"Command: `{plan.get('command', '')}`", '']
  shared = [c for c in cells if c['run'] != f"{c['config']}/{c['mode']}/"
            f"seed_{c['seed']}"]
  if shared:
    pairs = _ordered(f"{c['config']}/{c['mode']} is the same run as "
                     f"{c['run'].rsplit('/', 1)[0]}" for c in shared)
    lines += ['Shared runs: ' + '; '.join(pairs) + '.', '']
  comparisons = {}
  for config in _ordered(c['config'] for c in cells):
    modes = _ordered(c['mode'] for c in cells if c['config'] == config)
    planned = len({c['seed'] for c in cells if c['config'] == config})
    lines += [f'### {config}', '',
              '| mode | runs | final top-1 (mean ± std) | 95 % CI (t) | '
              'training time (measured) | normalized time | images/s |',
              '|---|---|---|---|---|---|---|']
    for mode in modes:
      runs = _by(rows, config, mode)
      if not runs:
        lines.append(f'| {mode} | 0 of {planned} | – | – | – | – | – |')
        continue
      s = cell_summary(runs)
      lines.append(
          f"| {mode} | {s['runs']} of {planned} | {format_top1(s)} | "
          f"{_interval((s['ci_low'], s['ci_high']))} | "
          f"{s['minutes']:.1f} min | {_num(s['normalized_minutes'], 1, ' min')}"
          f" | {s['images_per_second']:.0f} |")
    comparison = compare_to_baseline(rows, curve_rows, config, modes,
                                     step_times)
    comparisons[config] = comparison
    if len(comparison) > 1:
      clock_names = ' | '.join(CLOCKS)
      lines += ['', f"Against `{BASELINE}` (target top-1 for time to "
                f"accuracy: {comparison['_target']:.2f} %, the lowest final "
                'mean of these modes; 95 % intervals: bootstrap over seeds '
                'for speedups, on the normalized clock with the step-time '
                "benchmark's rounds redrawn too; paired t for the top-1 "
                'difference):', '',
                f'| mode | seeds | speedup, equal epochs: {clock_names} | '
                f'speedup to target: {clock_names} | top-1 difference (points) |',
                '|---|---|' + '---|' * (2 * len(CLOCKS) + 1)]
      for mode in modes:
        entry = comparison.get(mode)
        if not entry:
          continue
        cols = []
        for name in ('epochs', 'target'):
          for label in CLOCKS:
            value = entry.get(f'{name}_{label}')
            text = (f"{_num(value, 2, 'x')} "
                    f"{_interval(entry.get(f'{name}_{label}_ci'))}")
            if label == 'normalized' and entry[f'{name}_flag']:
              text += ' (differs from measured by > 10 %)'
            cols.append(text)
        lines.append(
            f"| {mode} | {entry['seeds']} | {' | '.join(cols)} | "
            f"{entry['top1_diff']:+.2f} {_interval(entry['top1_diff_ci'])} |")
    lines.append('')
  return lines + against_paper(rows, comparisons)


def _speedup_text(entry, name) -> str:
  """'measured [CI] / normalized [CI] / multiply-adds [CI]' for one speedup
  of one mode."""
  if not entry or entry.get(f'{name}_measured') is None:
    return '–'
  parts = [f"{_num(entry.get(f'{name}_{label}'), 2, 'x')} "
           f"{_interval(entry.get(f'{name}_{label}_ci'))}"
           for label in CLOCKS]
  return ' / '.join(parts)


def against_paper(rows, comparisons) -> List[str]:
  """The paper's two claims beside this study's numbers, one column a config.

  Speedups are `none` over `no_progressive` on each of CLOCKS;
  the gain from adaptive regularization is `none` minus
  `fixed_regularization`, paired by seed, with its t interval.
  """
  configs = [c for c, comparison in comparisons.items()
             if PROGRESSIVE in comparison]
  if not configs:
    return []

  def gain(config):
    diff, interval, seeds = top1_difference(rows, config, PROGRESSIVE,
                                            RESIZING_ONLY)
    if diff is None:
      return '–'
    return f'{diff:+.2f} {_interval(interval)} ({_seeds(seeds)})'

  def versus_baseline(config):
    entry = comparisons[config][PROGRESSIVE]
    return (f"{entry['top1_diff']:+.2f} {_interval(entry['top1_diff_ci'])} "
            f"({_seeds(entry['seeds'])})")

  table = [
      ('speedup of progressive learning to the target top-1 (measured / '
       'normalized / multiply-adds)', PAPER_SPEEDUP,
       [_speedup_text(comparisons[c][PROGRESSIVE], 'target')
        for c in configs]),
      ('speedup at equal epochs (measured / normalized / multiply-adds)', '–',
       [_speedup_text(comparisons[c][PROGRESSIVE], 'epochs')
        for c in configs]),
      (f'top-1 of progressive learning minus `{BASELINE}` (points)',
       'equal or better', [versus_baseline(c) for c in configs]),
      (f'gain of adaptive regularization: `{PROGRESSIVE}` minus '
       f'`{RESIZING_ONLY}` (points)', PAPER_GAIN,
       [gain(c) for c in configs]),
  ]
  lines = ['### Against the paper', '',
           'Progressive learning is the `none` mode; 95 % intervals in '
           'brackets (bootstrap over seeds for speedups, paired t for top-1 '
           'differences).', '',
           '| claim | paper (ImageNet) | ' + ' | '.join(configs) + ' |',
           '|---|---|' + '---|' * len(configs)]
  for claim, paper, here in table:
    lines.append(f"| {claim} | {paper} | {' | '.join(here)} |")
  return lines + ['']


def plot(results_dir, curve_rows, path):
  """Mean eval top-1 against normalized time (the answer's clock), a ±1 std
  band; the second row enlarges the last 20 % of training, where the final
  gaps of one to three points are."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  plan = read_json(os.path.join(results_dir, PLAN))
  configs = _ordered(c['config'] for c in plan.get('cells', []))
  # One colour per mode in every panel, so panels read alike.
  palette = plt.rcParams['axes.prop_cycle'].by_key()['color']
  colors = {mode: palette[i % len(palette)] for i, mode in
            enumerate(_ordered(c['mode'] for c in plan.get('cells', [])))}
  columns = max(len(configs), 1)
  fig, axes = plt.subplots(2, columns, figsize=(5.5 * columns, 7.5),
                           squeeze=False)
  clock = ('normalized' if all(r['normalized_seconds'] is not None
                               for r in curve_rows) else 'measured')
  for column, config in enumerate(configs):
    full, zoom = axes[0][column], axes[1][column]
    means = []
    for mode in _ordered(c['mode'] for c in plan['cells']
                         if c['config'] == config):
      seeds = sorted({r['seed'] for r in curve_rows
                      if r['config'] == config and r['mode'] == mode})
      curves = [c for c in (_curve(curve_rows, config, mode, s, clock)
                            for s in seeds) if c]
      if not curves:
        continue
      length = min(len(c) for c in curves)
      times = np.array([[p[0] for p in c[:length]] for c in curves]) / 60
      top1 = np.array([[p[1] for p in c[:length]] for c in curves]) * 100
      mean, std = top1.mean(0), top1.std(0, ddof=1 if len(curves) > 1 else 0)
      means.append((times.mean(0), mean, std))
      for ax in (full, zoom):
        ax.plot(times.mean(0), mean, color=colors[mode], marker='.',
                label=f'{mode} ({_seeds(len(curves))})')
        ax.fill_between(times.mean(0), mean - std, mean + std, alpha=0.2,
                        color=colors[mode])
    full.set_title(config)
    if means:
      end = max(t[-1] for t, _, _ in means)
      inside = [np.concatenate([(m - d)[t >= 0.8 * end], (m + d)[t >= 0.8 * end]])
                for t, m, d in means]
      inside = np.concatenate(inside)
      zoom.set_xlim(0.8 * end, end * 1.01)
      if inside.size:
        zoom.set_ylim(inside.min() - 0.3, inside.max() + 0.3)
    zoom.set_title(f'{config}: last 20 % of training')
    for ax in (full, zoom):
      ax.set_xlabel(f'training time (min, {clock})')
      ax.grid(alpha=0.3)
      if ax.get_legend_handles_labels()[0]:
        ax.legend(loc='lower right')
    full.set_ylabel('eval top-1 (%), mean ± 1 std over seeds')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def ensure_multiply_adds(results_dir):
  """Counts the model's multiply-adds per image at every size the finished
  runs trained (once, kept in results_dir as multiply_adds.json)."""
  path = os.path.join(results_dir, clocks.MULTIPLY_ADDS)
  plan = read_json(os.path.join(results_dir, PLAN))
  folders = [os.path.join(results_dir, 'runs', c['run'])
             for c in plan.get('cells', [])]
  configs = [hparams.Config(hparams.load_yaml(
      os.path.join(f, run_dir.CONFIG_FILE))) for f in folders
             if is_finished(f)]
  if not configs:
    return
  sizes = clocks.sizes_of(progressive.run_plan(c).stages
                                for c in configs)
  known = read_json(path).get('multiply_adds_per_image', {})
  if all(str(size) in known for size in sizes):
    return
  from automl_effnetv2 import flops  # pylint: disable=g-import-not-at-top
  model = configs[0].model.as_dict()
  counts = flops.multiply_adds_per_image(None, sizes, model)
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(dict(model_name=model['model_name'],
                   num_classes=model['num_classes'],
                   multiply_adds_per_image=counts), f, indent=2,
              sort_keys=True)
  os.replace(tmp, path)


def write_report(results_dir) -> List[str]:
  """Writes the CSV files, then the tables and plot from the CSV files."""
  ensure_multiply_adds(results_dir)
  rows, curves = collect(results_dir)
  write_csv(os.path.join(results_dir, 'results.csv'), RESULT_FIELDS, rows)
  write_csv(os.path.join(results_dir, 'curves.csv'), CURVE_FIELDS, curves)
  rows = read_csv(os.path.join(results_dir, 'results.csv'))
  curves = read_csv(os.path.join(results_dir, 'curves.csv'))
  lines = tables(results_dir, rows, curves)
  with open(os.path.join(results_dir, 'results.md'), 'w',
            encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  plot(results_dir, curves, os.path.join(results_dir, 'results.png'))
  return lines
