"""The progressive-learning study: statistics, curves, grid, report, runner."""
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from automl_effnetv2.study import runner
from automl_effnetv2 import progressive
from automl_effnetv2 import run_config
from automl_effnetv2.study import answers
from automl_effnetv2.study import clocks
from automl_effnetv2.study import report
from automl_effnetv2.study import stats
from conftest import REPO


# -- statistics against closed forms and hand computation ---------------------
def _t975_two_df():
  # Student's t with 2 degrees of freedom: t_p = (2p - 1) / sqrt(2p(1 - p)).
  p = 0.975
  return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def test_t_quantiles_match_closed_forms():
  # One degree of freedom is the Cauchy distribution: t_p = tan(pi (p - 1/2)).
  assert stats.t_quantile(0.975, 1) == pytest.approx(
      math.tan(math.pi * 0.475), rel=1e-9)
  assert stats.t_quantile(0.975, 2) == pytest.approx(_t975_two_df(),
                                                            rel=1e-9)
  assert stats.t_quantile(0.025, 2) == pytest.approx(-_t975_two_df(),
                                                            rel=1e-9)
  # Many degrees of freedom approach the normal quantile 1.95996...
  normal = math.sqrt(2) * _erfinv(0.95)
  assert stats.t_quantile(0.975, 1e6) == pytest.approx(normal, rel=1e-4)


def _erfinv(y):
  low, high = 0.0, 5.0
  for _ in range(100):
    mid = (low + high) / 2
    low, high = (mid, high) if math.erf(mid) < y else (low, mid)
  return low


def test_mean_ci_of_three_values_by_hand():
  mean, std, low, high = stats.mean_ci([91.0, 92.0, 93.0])
  # std = 1; half width = t(0.975, 2) * 1 / sqrt(3).
  half = _t975_two_df() / math.sqrt(3)
  assert (mean, std) == (92.0, 1.0)
  assert (low, high) == pytest.approx((92.0 - half, 92.0 + half))
  assert stats.mean_ci([92.5]) == (92.5, 0.0, None, None)


def test_paired_difference_by_hand():
  # Differences 1, 2, 3: mean 2, std 1, as above.
  diff, low, high = stats.paired_difference_ci([11, 22, 33],
                                                     [10, 20, 30])
  half = _t975_two_df() / math.sqrt(3)
  assert diff == 2.0
  assert (low, high) == pytest.approx((2.0 - half, 2.0 + half))
  with pytest.raises(ValueError, match='unpaired'):
    stats.paired_difference_ci([1, 2], [1])


def test_time_to_target_interpolates_inside_the_crossing_segment():
  curve = [(10.0, 0.50), (20.0, 0.80), (30.0, 0.90)]
  assert stats.time_to_target(curve, 0.70) == pytest.approx(
      10 + 10 * (0.2 / 0.3))
  assert stats.time_to_target(curve, 0.90) == 30.0
  assert stats.time_to_target(curve, 0.95) is None
  # Before the first point the curve starts from (0, 0).
  assert stats.time_to_target(curve, 0.25) == pytest.approx(5.0)
  # The first crossing counts, not a later one after a dip.
  dip = [(10.0, 0.60), (20.0, 0.40), (30.0, 0.70)]
  assert stats.time_to_target(dip, 0.55) == pytest.approx(
      10 * 0.55 / 0.60)


def test_bootstrap_interval_brackets_resampled_means():
  values = [1.0, 2.0, 3.0, 10.0]

  def mean_of(draw):
    return sum(values[i] for i in draw) / len(draw)

  low, high = stats.bootstrap_ci(mean_of, len(values), resamples=2000)
  assert 1.0 <= low < sum(values) / 4 < high <= 10.0
  # Same seed, same interval; a constant statistic has a zero-width one.
  assert stats.bootstrap_ci(mean_of, 4, resamples=2000) == (low, high)
  assert stats.bootstrap_ci(lambda d: 2.5, 3) == (2.5, 2.5)
  assert stats.bootstrap_ci(mean_of, 1) == (None, None)


# -- the grid ---------------------------------------------------------------
def test_grid_runs_seed_major():
  cells = runner.grid_order(['a', 'b'], ['none', 'no_progressive'], 2)
  assert [(c.seed, c.dataset_cfg, c.mode) for c in cells] == [
      (0, 'a', 'none'), (0, 'a', 'no_progressive'),
      (0, 'b', 'none'), (0, 'b', 'no_progressive'),
      (1, 'a', 'none'), (1, 'a', 'no_progressive'),
      (1, 'b', 'none'), (1, 'b', 'no_progressive')]


def test_paper_range_config_has_four_stages_from_044_of_the_final_size():
  config = run_config.build_config('efficientnetv2-b0',
                                   'fashion_mnist_paper_range')
  default = run_config.build_config('efficientnetv2-b0', 'fashion_mnist')
  stages = progressive.stage_schedule(config, 1000, 64)
  sizes = [s.image_size for s in stages]
  assert len(stages) == 4 and sizes[-1] == 64
  assert 0.4 <= sizes[0] / sizes[-1] <= 0.5
  assert sizes == sorted(sizes)
  rams = [s.ram for s in stages]
  assert rams[0] == 5 and rams[-1] == default.data.ram and rams == sorted(rams)
  for key in ('train.epochs', 'train.lr_sched', 'train.isize', 'eval.isize',
              'model.model_name', 'train.batch_size'):
    section, name = key.split('.')
    assert config[section][name] == default[section][name], key


def test_only_equivalent_runs_are_shared():
  cells = runner.grid_order(['fashion_mnist', 'fashion_mnist_paper_range'],
                              ['none', 'no_progressive'], 2)

  def build(cell):
    return run_config.build_config(
        'efficientnetv2-b0', cell.dataset_cfg,
        runner.run_overrides(cell.seed, 12, 1, ''), ablation=cell.mode)

  owner = runner.shared_runs(cells, build)
  shared = {(c.dataset_cfg, c.mode, c.seed): owner[c].dataset_cfg
            for c in cells if owner[c] != c}
  # The two no_progressive runs train at 64 px and magnitude 10 throughout.
  assert shared == {('fashion_mnist_paper_range', 'no_progressive', 0):
                    'fashion_mnist',
                    ('fashion_mnist_paper_range', 'no_progressive', 1):
                    'fashion_mnist'}
  assert all(owner[c].seed == c.seed for c in cells)


def test_eval_steps_every_n_steps_or_epochs():
  assert progressive.eval_steps(4, 0, 60000, 128, 15) == [4, 8, 12]
  # 0.5 epoch of 60,000 images at batch 128 is 234 steps (floor, as train
  # steps are counted); the last step is left to the final evaluation.
  assert progressive.eval_steps(0, 0.5, 60000, 128, 937) == [234, 468, 703]
  assert progressive.eval_steps(0, 0, 60000, 128, 937) == []
  with pytest.raises(ValueError, match='both set'):
    progressive.eval_steps(4, 1, 60000, 128, 937)


def test_normalized_time_sums_steps_times_step_time_per_size():
  stages = [progressive.Stage(index=0, max_steps=10, image_size=28),
            progressive.Stage(index=1, max_steps=30, image_size=64)]
  times = {'28': 0.1, '64': 0.5}
  assert clocks.normalized_seconds(stages, 30, times) == pytest.approx(
      10 * 0.1 + 20 * 0.5)
  assert clocks.normalized_seconds(stages, 15, times) == pytest.approx(
      10 * 0.1 + 5 * 0.5)
  with pytest.raises(ValueError, match='no step time for 64'):
    clocks.normalized_seconds(stages, 30, {'28': 0.1})


def _recipe(config_name, mode, epochs, extra=''):
  return run_config.build_config(
      'efficientnetv2-b0', config_name,
      runner.run_overrides(0, epochs, 1, extra), ablation=mode)


def test_equal_time_length_by_hand():
  # Two stages at 48 and 64 px, a 64 px step costing twice a 48 px one.
  # no_progressive for 10 epochs: 4687 steps at 64 px = 9374 s. Progressive
  # learning with T steps trains T // 2 at 48 px and the rest at 64 px:
  # 3124 * 1 + 3125 * 2 = 9374 s at T = 6249, about 13.33 epochs.
  times = {'48': 1.0, '64': 2.0}
  two_stages = 'train.stages=2,data.ibase=32'
  progressive_run = _recipe('fashion_mnist', 'none', 10, two_stages)
  reference = _recipe('fashion_mnist', 'no_progressive', 10, two_stages)
  sizes = [s.image_size
           for s in progressive.run_plan(progressive_run, 100).stages]
  assert sizes == [48, 64]
  assert clocks.equal_time_steps(progressive_run, 9374, times) == 6249
  epochs = clocks.equal_time_epochs(progressive_run, reference, times)
  assert progressive.train_steps(epochs, 60000, 128) == 6249
  assert epochs == pytest.approx(6249 * 128 / 60000, abs=128 / 60000)
  # 6250 steps take 9375 s: the closer length wins, the shorter on a tie.
  assert clocks.equal_time_steps(progressive_run, 9374.6, times) == 6250
  assert clocks.equal_time_steps(progressive_run, 9374.5, times) == 6249


@pytest.mark.parametrize('config_name', ['fashion_mnist',
                                         'fashion_mnist_paper_range'])
def test_equal_time_length_is_the_closest_by_a_full_scan(config_name):
  with open(os.path.join(REPO, 'docs', 'study', 'step_times.json'),
            encoding='utf-8') as f:
    times = json.load(f)['seconds_per_step']
  run = _recipe(config_name, 'none', 10)
  reference = _recipe(config_name, 'no_progressive', 10)
  target = 4687 * times['64']  # no_progressive: every step at 64 px.

  def seconds(steps):
    stages = progressive.run_plan(run, steps).stages
    return sum((s.max_steps - start) * times[str(s.image_size)]
               for s, start in zip(stages, [0] + [t.max_steps
                                                  for t in stages[:-1]]))

  closest = min(range(4687, 3 * 4687), key=lambda t: abs(seconds(t) - target))
  epochs = clocks.equal_time_epochs(run, reference, times)
  assert progressive.train_steps(epochs, 60000, 128) == closest
  # Fewer, cheaper steps at the start buy more epochs: 1.05x-1.5x longer.
  assert 10.5 < epochs < 15


# -- the report from hand-made result files -----------------------------------
def _fake_run(folder, config, mode, seed, curve, total_steps=100):
  """A finished run's metrics.json and config.yaml, from (step, s, top1)."""
  os.makedirs(folder)
  built = run_config.build_config(
      'efficientnetv2-b0', config,
      f'runtime.seed={seed},train.epochs=2,eval.every_epochs=1', ablation=mode)
  built.save_to_yaml(os.path.join(folder, 'config.yaml'))
  evals = [{'global_step': step, 'train_seconds': seconds,
            'eval/acc_top1': top1, 'eval/acc_top5': 1.0,
            'total_steps': total_steps,
            'train_images_per_second': step * 128 / seconds}
           for step, seconds, top1 in curve]
  with open(os.path.join(folder, 'metrics.json'), 'w', encoding='utf-8') as f:
    json.dump({'evals': evals, 'final': evals[-1]}, f)


# Steps: 2 epochs of 60,000 at batch 128 = 937; the curves are hand-made:
# (step, training seconds, top-1) per evaluation of each (mode, seed).
FAKE_TOTAL_STEPS = 937
FAKE_CURVES = {
    ('none', 0): [(468, 40.0, 0.80), (FAKE_TOTAL_STEPS, 80.0, 0.90)],
    ('none', 1): [(468, 60.0, 0.82), (FAKE_TOTAL_STEPS, 120.0, 0.92)],
    ('no_progressive', 0): [(468, 100.0, 0.70),
                            (FAKE_TOTAL_STEPS, 200.0, 0.90)],
    ('no_progressive', 1): [(468, 100.0, 0.72),
                            (FAKE_TOTAL_STEPS, 200.0, 0.94)],
}


FAKE_MULTIPLY_ADDS = {'48': 2e6, '56': 3e6, '64': 4e6}


def _fake_study(tmp_path, curves):
  """A results folder of fashion_mnist runs: {(mode, seed): curve}."""
  modes = list(dict.fromkeys(mode for mode, _ in curves))
  seeds = len({seed for _, seed in curves})
  cells = runner.grid_order(['fashion_mnist'], modes, seeds)
  report.save_plan(str(tmp_path), cells, {c: c for c in cells},
                         ['--x'])
  with open(tmp_path / report.STEP_TIMES, 'w', encoding='utf-8') as f:
    json.dump({'seconds_per_step': {'48': 0.5, '56': 0.75, '64': 1.0}}, f)
  with open(tmp_path / clocks.MULTIPLY_ADDS, 'w', encoding='utf-8') as f:
    json.dump({'multiply_adds_per_image': FAKE_MULTIPLY_ADDS}, f)
  for (mode, seed), curve in curves.items():
    _fake_run(str(tmp_path / 'runs' / 'fashion_mnist' / mode / f'seed_{seed}'),
              'fashion_mnist', mode, seed, curve, FAKE_TOTAL_STEPS)
  return report.write_report(str(tmp_path))


def test_report_speedups_and_differences_by_hand(tmp_path):
  total = FAKE_TOTAL_STEPS
  lines = _fake_study(tmp_path, FAKE_CURVES)
  with open(tmp_path / 'results.csv', encoding='utf-8') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  rows = report.read_csv(tmp_path / 'results.csv')
  curve_rows = report.read_csv(tmp_path / 'curves.csv')
  result = report.compare_to_baseline(
      rows, curve_rows, 'fashion_mnist', ['none', 'no_progressive'])
  # Equal epochs: baseline 200 s on average, none 100 s: 2x.
  assert result['none']['epochs_measured'] == pytest.approx(2.0)
  # Target = lowest final mean = none's 0.91 (baseline ends at 0.92).
  assert result['_target'] == pytest.approx(91.0)
  # none's mean curve (50 s, 0.81), (100 s, 0.91): reaches 0.91 at 100 s.
  # Baseline's (100 s, 0.71), (200 s, 0.92): at 100 + 100 * 0.20 / 0.21 s.
  baseline_time = 100 + 100 * 0.20 / 0.21
  assert result['none']['target_measured'] == pytest.approx(
      baseline_time / 100.0)
  # Normalized: 'none' runs 312 steps at 48, 312 at 56, 313 at 64 px.
  stages = progressive.stage_schedule(
      run_config.build_config('efficientnetv2-b0', 'fashion_mnist'), total,
      64)
  ends = [s.max_steps for s in stages]
  none_seconds = (ends[0] * 0.5 + (ends[1] - ends[0]) * 0.75 +
                  (ends[2] - ends[1]) * 1.0)
  assert result['none']['epochs_normalized'] == pytest.approx(
      total * 1.0 / none_seconds)
  # Multiply-adds: the same steps weighed by 2, 3 and 4 M per image.
  none_adds = (ends[0] * 2 + (ends[1] - ends[0]) * 3 +
               (ends[2] - ends[1]) * 4) * 1e6 * 128
  assert result['none']['epochs_multiply-adds'] == pytest.approx(
      total * 4e6 * 128 / none_adds)
  assert rows[0]['multiply_adds'] == pytest.approx(none_adds / 1e12)
  # top-1 difference: (0.90 - 0.90, 0.92 - 0.94) -> mean -1 point.
  assert result['none']['top1_diff'] == pytest.approx(-1.0)
  low, high = result['none']['top1_diff_ci']
  assert low < -1.0 < high
  assert result['none']['epochs_flag']  # 2x measured vs ~1.3x normalized.
  assert any('| none | 2 of 2 | 91.00 ± 1.41 % |' in line for line in lines)
  one_run = report.cell_summary(
      [r for r in rows if r['mode'] == 'none' and int(r['seed']) == 0])
  assert report.format_top1(one_run) == '90.00 % (one run)'

  assert (tmp_path / 'results.png').stat().st_size > 1000


def test_redrawn_step_times_keep_a_round_paired_across_sizes():
  # Round k took k seconds at 48 px and 2k at 64 px: any redraw of whole
  # rounds keeps the ratio 2, a redraw per size would not.
  step_times = {'seconds_per_step': {'48': 2.0, '64': 4.0},
                'samples': {'48': [1.0, 2.0, 3.0, 4.0, 5.0],
                            '64': [2.0, 4.0, 6.0, 8.0, 10.0]}}
  draws = clocks.step_time_draws(step_times, 200)
  assert {d['64'] / d['48'] for d in draws} == {2.0}
  assert len({d['48'] for d in draws}) > 1
  assert clocks.step_time_draws({'seconds_per_step': {'48': 1}},
                                      5) is None


def test_normalized_interval_carries_the_benchmarks_spread(tmp_path):
  _fake_study(tmp_path, FAKE_CURVES)
  rows = report.read_csv(tmp_path / 'results.csv')
  curve_rows = report.read_csv(tmp_path / 'curves.csv')

  def interval(samples):
    step_times = {'seconds_per_step': {'48': 0.5, '56': 0.75, '64': 1.0},
                  'samples': samples}
    return report.compare_to_baseline(
        rows, curve_rows, 'fashion_mnist', ['none', 'no_progressive'],
        step_times, resamples=400)['none']['epochs_normalized_ci']

  # Equal epochs: every seed trains the same steps, so over seeds alone the
  # normalized speedup is one number; the spread comes from the benchmark.
  steady = {'48': [0.5] * 3, '56': [0.75] * 3, '64': [1.0] * 3}
  low, high = interval(steady)
  assert low == pytest.approx(high)
  # Rounds where 64 px cost 0.8, 1.0 and 1.2 s: the speedup moves with it.
  spread = {'48': [0.5] * 3, '56': [0.75] * 3, '64': [0.8, 1.0, 1.2]}
  low, high = interval(spread)
  point = report.compare_to_baseline(
      rows, curve_rows, 'fashion_mnist', ['none', 'no_progressive'])[
          'none']['epochs_normalized']
  assert low < point < high
  # The extremes are all-0.8 and all-1.2 draws of the 64 px rounds.
  total = FAKE_TOTAL_STEPS
  counts = clocks.parse_steps(rows[0]['steps_per_size'])
  assert sum(counts.values()) == total

  def speedup(t64):
    return total * t64 / clocks.weighed(
        counts, {'48': 0.5, '56': 0.75, '64': t64})
  assert speedup(0.8) <= low and high <= speedup(1.2)


def test_report_sets_both_claims_beside_the_paper(tmp_path):
  total = FAKE_TOTAL_STEPS
  lines = _fake_study(tmp_path, {
      **FAKE_CURVES,
      ('fixed_regularization', 0): [(468, 40.0, 0.80), (total, 80.0, 0.89)],
      ('fixed_regularization', 1): [(468, 60.0, 0.82), (total, 120.0, 0.90)],
  })
  rows = report.read_csv(tmp_path / 'results.csv')
  # none - fixed_regularization: +1 and +2 points, mean +1.5; with two seeds
  # the 95 % t interval is 1.5 -/+ tan(0.475 pi) * stdev / sqrt(2).
  diff, (low, high), seeds = report.top1_difference(
      rows, 'fashion_mnist', 'none', 'fixed_regularization')
  half = math.tan(0.475 * math.pi) * math.sqrt(0.5) / math.sqrt(2)
  assert (diff, seeds) == (pytest.approx(1.5), 2)
  assert (low, high) == (pytest.approx(1.5 - half), pytest.approx(1.5 + half))
  start = lines.index('### Against the paper')
  table = {line.split(' | ')[0].lstrip('| '): line.split(' | ')[1:]
           for line in lines[start:] if line.startswith('| ')}
  gain = next(v for k, v in table.items() if k.startswith('gain of adaptive'))
  assert gain[0] == report.PAPER_GAIN
  assert gain[1] == f'+1.50 [{1.5 - half:.2f}, {1.5 + half:.2f}] (2 seeds) |'
  # The speedups are none's over no_progressive, as in the config's table.
  comparison = report.compare_to_baseline(
      rows, report.read_csv(tmp_path / 'curves.csv'), 'fashion_mnist',
      ['none', 'no_progressive', 'fixed_regularization'])
  epochs = next(v for k, v in table.items() if k.startswith('speedup at'))
  assert epochs[1].startswith(
      f"{comparison['none']['epochs_measured']:.2f}x [")
  assert ' / ' in epochs[1]
  versus = next(v for k, v in table.items() if k.startswith('top-1 of'))
  assert versus[1].startswith(f"{comparison['none']['top1_diff']:+.2f} [")
  # While no seed has both modes, the gain is not shown.
  assert report.top1_difference(
      rows, 'fashion_mnist', 'none', 'constant_weight_decay')[0] is None


def test_a_row_of_a_partial_grid_uses_one_set_of_seeds(tmp_path):
  # fixed_regularization has only seed 0, so the speedups of the config can
  # use seed 0 alone; none's top-1 difference must then be seed 0's too
  # (0.90 - 0.90), not the mean over both seeds none and the baseline have.
  _fake_study(tmp_path, {
      **FAKE_CURVES,
      ('fixed_regularization', 0): [(468, 40.0, 0.80),
                                     (FAKE_TOTAL_STEPS, 80.0, 0.89)],
  })
  rows = report.read_csv(tmp_path / 'results.csv')
  comparison = report.compare_to_baseline(
      rows, report.read_csv(tmp_path / 'curves.csv'), 'fashion_mnist',
      ['none', 'no_progressive', 'fixed_regularization'])
  entry = comparison['none']
  assert entry['seeds'] == 1
  assert entry['top1_diff'] == pytest.approx(0.0)
  assert entry['top1_diff_ci'] == (None, None)  # One pair has no interval.
  # Asked alone, the two modes still pair over both of their seeds.
  assert report.top1_difference(
      rows, 'fashion_mnist', 'none', 'no_progressive')[0] == pytest.approx(-1.0)


def _answer_rows(lines):
  """{first cell: [the other cells]} of the answers table's body rows."""
  rows = [line.strip('| ').split(' | ') for line in lines
          if line.startswith('| ') and not line.startswith('| study |')]
  return {row[0]: row[1:] for row in rows}


def test_answers_of_several_studies_in_one_block(tmp_path):
  equal_epochs, equal_time = tmp_path / 'epochs', tmp_path / 'time'
  equal_epochs.mkdir()
  equal_time.mkdir()
  _fake_study(equal_epochs, FAKE_CURVES)
  # The same runs, as if the runner had stretched none to equal time.
  _fake_study(equal_time, FAKE_CURVES)
  plan = json.loads((equal_time / report.PLAN).read_text())
  plan['command'] = 'python -m automl_effnetv2.ablation --equal_time_to=x'
  (equal_time / report.PLAN).write_text(json.dumps(plan))
  document = tmp_path / 'study.md'
  document.write_text('# Title\n\nbefore\n' + answers.BEGIN +
                      '\nold table\n' + answers.END + '\nafter\n')
  missing = str(tmp_path / 'not_yet')
  lines = answers.write_answers(
      str(document), [str(equal_epochs), str(equal_time), missing])

  text = document.read_text()
  assert text.startswith('# Title\n\nbefore\n' + answers.BEGIN)
  assert text.endswith(answers.END + '\nafter\n')
  assert 'old table' not in text and '\n'.join(lines) in text
  rows = _answer_rows(lines)
  comparison = report.compare_to_baseline(
      report.read_csv(equal_epochs / 'results.csv'),
      report.read_csv(equal_epochs / 'curves.csv'), 'fashion_mnist',
      ['no_progressive', 'none'])['none']
  epochs_row = rows[f'equal epochs: 2 (`{equal_epochs}`)']
  # config, seeds, top-1 difference, 3 time ratios, 3 speedups to target.
  assert len(epochs_row) == 9
  assert epochs_row[:3] == ['fashion_mnist', '2 of 2',
                            '-1.00 ' + report._interval(  # pylint: disable=protected-access
                                comparison['top1_diff_ci'])]
  assert epochs_row[3].startswith('2.00x [')  # 200 s against 100 s.
  assert epochs_row[6].startswith(f"{comparison['target_measured']:.2f}x [")
  for column, clock in ((4, 'normalized'), (5, 'multiply-adds')):
    assert epochs_row[column].startswith(
        f"{comparison[f'epochs_{clock}']:.2f}x [")
  time_row = rows[f'equal normalized time: 2 against 2 epochs (`{equal_time}`)']
  assert time_row[3:] == epochs_row[3:]
  assert rows[f'not started (`{missing}`)'] == ['–'] * 9


def test_answers_need_the_block_in_the_document(tmp_path):
  _fake_study(tmp_path, FAKE_CURVES)
  document = tmp_path / 'study.md'
  document.write_text('no block here\n')
  with pytest.raises(ValueError, match='has no answers block'):
    answers.write_answers(str(document), [str(tmp_path)])
  assert document.read_text() == 'no block here\n'


def test_report_only_writes_the_answers_into_the_document(tmp_path):
  study = tmp_path / 'study'
  study.mkdir()
  _fake_study(study, FAKE_CURVES)
  document = tmp_path / 'answers.md'
  document.write_text(f'{answers.BEGIN}\n{answers.END}\n')
  base = [sys.executable, '-m', 'automl_effnetv2.ablation', '--report_only',
          f'--results_dir={study}']
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  done = subprocess.run(
      base + [f'--combine={tmp_path / "later"}', f'--answers_to={document}'],
      env=env, cwd=REPO, capture_output=True, text=True, check=True)
  assert f'wrote the answers table into {document}' in done.stdout
  rows = _answer_rows(document.read_text().splitlines())
  assert rows[f'equal epochs: 2 (`{study}`)'][:2] == ['fashion_mnist',
                                                       '2 of 2']
  assert f'not started (`{tmp_path / "later"}`)' in rows
  # A document that is not there: one line, nothing written.
  missing = subprocess.run(base + [f'--answers_to={tmp_path / "none.md"}'],
                           env=env, cwd=REPO, capture_output=True, text=True)
  assert missing.returncode != 0
  assert 'is not a file' in missing.stderr
  assert 'Traceback' not in missing.stderr
  assert not (tmp_path / 'none.md').exists()


def _git(repo, *args):
  return subprocess.run(['git', '-C', str(repo), *args], capture_output=True,
                        text=True, check=True).stdout


def test_commit_takes_the_results_folder_alone_and_skips_an_empty_commit(
    tmp_path, capsys):
  repo = tmp_path / 'repo'
  results = repo / 'docs' / 'study'
  results.mkdir(parents=True)
  _git(repo, 'init', '-q')
  _git(repo, 'config', 'user.email', 'study@example.com')
  _git(repo, 'config', 'user.name', 'study')
  (repo / 'README.md').write_text('edited by hand, not the runner\n')
  (results / 'results.md').write_text('one run\n')
  runner.commit(str(results), 'study: first')
  assert _git(repo, 'log', '--format=%s').split('\n')[0] == 'study: first'
  assert _git(repo, 'show', '--name-only', '--format=', 'HEAD').split() == [
      'docs/study/results.md']
  # The final report equal to the last run's: nothing to do, nothing to say.
  runner.commit(str(results), 'study: report')
  assert _git(repo, 'rev-list', '--count', 'HEAD').strip() == '1'
  assert 'could not commit' not in capsys.readouterr().err
  # A folder outside any repository cannot be committed: said, not raised.
  outside = tmp_path / 'outside'
  outside.mkdir()
  (outside / 'results.md').write_text('x\n')
  runner.commit(str(outside), 'study: lost')
  assert 'could not commit' in capsys.readouterr().err


# -- the runner on tiny real runs ---------------------------------------------
def test_runner_shares_skips_and_rebuilds_from_results_alone(
    fashion_mnist_tfds_dir, tmp_path):
  from conftest import TINY_HPARAMS  # pylint: disable=g-import-not-at-top
  # The configs' own stage counts and base sizes stay, so that their
  # no_progressive runs are the same run.
  tiny = ','.join(h for h in TINY_HPARAMS.split(',')
                  if not h.startswith(('train.stages=', 'data.ibase=')))
  runs, results = tmp_path / 'runs', tmp_path / 'results'
  command = [sys.executable, '-m', 'automl_effnetv2.ablation',
             '--dataset_cfg=fashion_mnist,fashion_mnist_paper_range',
             '--modes=no_progressive', '--seeds=1', '--nostep_times',
             '--eval_every_epochs=0.002', f'--output_dir={runs}',
             f'--results_dir={results}',
             f'--hparam_str={tiny},data.tfds_data_dir={fashion_mnist_tfds_dir}']
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  first = subprocess.run(command, env=env, cwd=REPO, capture_output=True,
                         text=True, check=True)
  assert first.stdout.count('training in') == 1, first.stdout
  assert ('fashion_mnist_paper_range/no_progressive/seed_0: the same run as '
          'fashion_mnist/no_progressive/seed_0') in first.stdout
  kept = results / 'runs' / 'fashion_mnist' / 'no_progressive' / 'seed_0'
  assert sorted(os.listdir(kept)) == ['config.yaml', 'metrics.json']
  evals = json.loads((kept / 'metrics.json').read_text())['evals']
  # Every 0.002 epoch = 7 steps, plus the ends of the three stages (the
  # same settings in each: the boundaries stay in no_progressive).
  assert [e['global_step'] for e in evals] == [5, 7, 10, 15]
  seconds = [e['train_seconds'] for e in evals]
  assert seconds == sorted(seconds)
  saved = yaml.safe_load((kept / 'config.yaml').read_text())
  assert saved['eval']['every_epochs'] == 0.002
  rows = report.read_csv(results / 'results.csv')
  # The shared run is listed under both configs.
  assert sorted((r['config'], r['mode'], r['run']) for r in rows) == [
      ('fashion_mnist', 'no_progressive', 'fashion_mnist/no_progressive/seed_0'),
      ('fashion_mnist_paper_range', 'no_progressive',
       'fashion_mnist/no_progressive/seed_0')]
  report_text = (results / 'results.md').read_text()
  # On another machine only the results folder is there: nothing reruns.
  shutil.rmtree(runs)
  again = subprocess.run(command, env=env, cwd=REPO, capture_output=True,
                         text=True, check=True)
  assert again.stdout.count('finished, skipped') == 1
  assert 'training in' not in again.stdout
  assert (results / 'results.md').read_text() == report_text

  # An equal-time study beside it: no_progressive is the run above, copied;
  # `none` trains as long as makes its normalized time equal.
  times = tmp_path / 'step_times.json'
  per_size = {str(size): size * size / 1e4 for size in range(8, 65)}
  times.write_text(json.dumps({'seconds_per_step': per_size}))
  equal = tmp_path / 'equal_time'
  command = [c for c in command if not c.startswith(('--modes=', '--dataset',
                                                     '--results_dir='))]
  command += ['--dataset_cfg=fashion_mnist', '--modes=no_progressive,none',
              '--equal_time_to=no_progressive', f'--reuse_from={results}',
              f'--step_times_from={times}', f'--results_dir={equal}']
  third = subprocess.run(command, env=env, cwd=REPO, capture_output=True,
                         text=True, check=True)
  assert 'no_progressive/seed_0: the same run as' in third.stdout
  assert third.stdout.count('training in') == 1, third.stdout
  built = {m: run_config.build_config(
      'efficientnetv2-b0', 'fashion_mnist',
      runner.run_overrides(0, None, 0.002,
                             f'{tiny},data.tfds_data_dir={fashion_mnist_tfds_dir}'),
      ablation=m) for m in ('none', 'no_progressive')}
  epochs = clocks.equal_time_epochs(built['none'],
                                          built['no_progressive'], per_size)
  saved = yaml.safe_load(
      (equal / 'runs' / 'fashion_mnist' / 'none' / 'seed_0' /
       'config.yaml').read_text())
  assert saved['train']['epochs'] == pytest.approx(epochs)
  copied = equal / 'runs' / 'fashion_mnist' / 'no_progressive' / 'seed_0'
  assert (copied / 'metrics.json').read_text() == (
      kept / 'metrics.json').read_text()
  rows = report.read_csv(equal / 'results.csv')
  normalized = {r['mode']: r['normalized_seconds'] for r in rows}
  # Equal within one step of the largest size.
  assert abs(normalized['none'] - normalized['no_progressive']) <= (
      max(per_size.values()))


def test_step_time_benchmark_runs_every_size(tiny_config):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from automl_effnetv2.study import step_times  # pylint: disable=g-import-not-at-top
  del tf
  result = step_times.measure(tiny_config(), [16, 24], steps=2, rounds=2,
                              warmup_calls=1)
  assert sorted(result['seconds_per_step']) == ['16', '24']
  assert all(len(v) == 2 for v in result['samples'].values())


@pytest.mark.parametrize('program, args, message', [
    ('automl_effnetv2.ablation', ['--seeds=many', '--output_dir=runs/x'],
     'flag --seeds=many'),
    ('automl_effnetv2.study.step_times', ['--sizes=28'],
     '--output is required'),
    ('automl_effnetv2.study.step_times',
     ['--dataset_cfg=fashion_mnst', '--output=x.json'],
     "did you mean fashion_mnist"),
    ('automl_effnetv2.flops', ['--sizes=28,big'], 'expected integers'),
])
def test_study_programs_refuse_mistakes_in_one_line(tmp_path, program, args,
                                                   message):
  result = subprocess.run([sys.executable, '-m', program, *args],
                          env=dict(os.environ, PYTHONPATH=REPO), cwd=tmp_path,
                          capture_output=True, text=True, check=False)
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('error:')]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  assert os.listdir(tmp_path) == []
