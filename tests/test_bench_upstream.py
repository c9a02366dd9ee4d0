"""The side-by-side driver and the stage-switch probe without training:
their flag checks, the report built from run summaries, and the refusal of
--same_init before upstream's run exists."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from conftest import bench_refusal

sys.path.insert(0, os.path.join(REPO, 'bench'))
import upstream_vs_port  # noqa: E402  pylint: disable=g-import-not-at-top

STAGE_SWITCH = os.path.join(REPO, 'bench', 'stage_switch.py')
TF_RUNTIME_SPEED = os.path.join(REPO, 'bench', 'tf_runtime_speed.py')


def _summary(side, mode, seed, top1, **extra):
  summary = dict(side=side, mode=mode, seed=seed, epochs=2, top1=top1,
                 eval_step=937, process_seconds=600.0,
                 images_per_second_by_stage=[300.0, 250.0, 200.0])
  summary.update(extra)
  return summary


def _write(output_dir, summary):
  folder = os.path.join(output_dir, summary['side'], summary['mode'],
                        f"seed_{summary['seed']}")
  os.makedirs(folder)
  with open(os.path.join(folder, 'summary.json'), 'w') as f:
    json.dump(summary, f)


def _report(tmp_path, *summaries):
  """The driver's --report_only over these run summaries: its JSON."""
  for summary in summaries:
    _write(str(tmp_path / 'runs'), summary)
  args = upstream_vs_port.parse_args(
      ['--report_only', '--output_dir', str(tmp_path / 'runs'),
       '--results', str(tmp_path / 'report')])
  assert upstream_vs_port.report(args) == 0
  with open(tmp_path / 'report.json') as f:
    return json.load(f)


def test_report_averages_upstream_steps_into_the_ports_intervals(tmp_path):
  ends = [64 * k for k in range(1, 15)] + [937]
  # The port logs one mean per interval; upstream one value per step.
  port = _summary('port', 'none', 0, 0.80,
                  xent_windows=[[end, 2.0] for end in ends])
  upstream = _summary('upstream', 'none', 0, 0.85, port_eval_top1=0.85,
                      xent=[[step, 0.0, 1.0 if step <= 64 else 3.0]
                            for step in range(1, 938)])
  second = _summary('upstream', 'none', 1, 0.79,
                    xent=[[step, 0.0, 2.0] for step in range(1, 938)])
  cells = _report(tmp_path, port, upstream, second)['cells']
  up = cells['none/upstream']
  assert up['top1_mean'] == pytest.approx(0.82)
  assert up['top1_range'] == [0.79, 0.85]
  first_run = up['runs'][0]
  assert first_run['xent_curve'][:2] == [1.0, 3.0]
  assert first_run['port_eval_top1'] == 0.85
  assert up['runs'][1]['port_eval_top1'] is None
  assert cells['none/port']['runs'][0]['xent_curve'] == [2.0] * len(ends)
  assert (tmp_path / 'report.png').stat().st_size > 0


def test_flag_mistakes_get_one_line(tmp_path):
  args = upstream_vs_port.parse_args(['--sides', 'port,theirs'])
  assert upstream_vs_port.check_args(args) == (
      "--sides takes upstream and/or port, not ['theirs'].")
  args = upstream_vs_port.parse_args(['--automl', str(tmp_path)])
  assert '--automl must be' in upstream_vs_port.check_args(args)
  args = upstream_vs_port.parse_args(
      ['--port_hparams', 'train.restart_input_each_stag=true'])
  problem = upstream_vs_port.check_args(args)
  assert problem.startswith('--port_hparams: ') and '\n' not in problem
  assert 'train.restart_input_each_stage' in problem  # The closest key.


def test_first_seed_adds_runs_beside_earlier_ones(tmp_path, capsys):
  for seed in (4, 5):
    folder = tmp_path / 'port' / 'none' / f'seed_{seed}'
    folder.mkdir(parents=True)
    (folder / 'summary.json').write_text('{}')
  args = upstream_vs_port.parse_args(
      ['--first_seed', '4', '--seeds', '2', '--sides', 'port', '--modes',
       'none', '--output_dir', str(tmp_path)])
  assert upstream_vs_port.run_all(args) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines == ['port/none/seed_4: done, skipped',
                   'port/none/seed_5: done, skipped']
  args = upstream_vs_port.parse_args(['--first_seed', '-1'])
  assert upstream_vs_port.check_args(args) == '--first_seed must be 0 or more.'


def test_same_init_waits_for_upstreams_run(tmp_path, capsys):
  args = upstream_vs_port.parse_args(
      ['--same_init', '--output_dir', str(tmp_path)])
  folder = str(tmp_path / 'port' / 'none' / 'seed_0')
  assert upstream_vs_port.train_port(args, 'none', 0, folder) is None
  expected = upstream_vs_port.upstream_initial_weights(str(tmp_path), 'none',
                                                       0)
  assert expected == str(tmp_path / 'upstream' / 'none' / 'seed_0' /
                         'model.ckpt-0')
  assert f'--same_init: {expected} is missing' in capsys.readouterr().out
  assert not os.path.exists(folder)  # Nothing trained, nothing written.


def test_prefix_runs_report_the_first_switch_without_a_top1(tmp_path):
  # Prefix runs stopped at step 448: the port's intervals as it cuts them
  # at the first stage end (312), upstream's cross-entropy per step.
  ends = [64, 128, 192, 256, 312, 320, 384, 448]
  port_xent = {312: 9.0, 320: 3.0, 384: 1.5, 448: 9.0}
  port = _summary('port', 'none', 0, None, eval_step=None,
                  stopped_at_step=448,
                  xent_windows=[[e, port_xent.get(e, 5.0)] for e in ends],
                  images_per_second_by_stage=[300.0, 250.0, None])
  upstream = _summary('upstream', 'none', 0, None, eval_step=None,
                      stopped_at_step=470,
                      xent=[[step, 0.0, 2.0 if 312 < step <= 384 else 7.0]
                            for step in range(1, 471)])
  results = _report(tmp_path, port, upstream)
  cells = results['cells']
  port_run = cells['none/port']['runs'][0]
  # (312, 384]: 8 steps at 3.0 and 64 at 1.5.
  assert port_run['switch_xent'] == pytest.approx((8 * 3.0 + 64 * 1.5) / 72)
  assert cells['none/upstream']['runs'][0]['switch_xent'] == pytest.approx(2)
  assert cells['none/port']['top1_mean'] is None
  upstream_run = cells['none/upstream']['runs'][0]
  assert upstream_run['stopped_at_step'] == 470
  # The interval (448, 512] was cut short by the stop: left out.
  assert upstream_run['xent_curve'][7] == 7.0
  assert upstream_run['xent_curve'][8:] == [None] * (
      len(results['log_steps']) - 8)
  # Without a whole port run, the intervals are those the port would cut.
  assert results['log_steps'][:8] == ends
  assert port_run['xent_curve'][8:] == [None] * (len(results['log_steps']) - 8)
  assert (tmp_path / 'report.png').stat().st_size > 0


def test_a_prefix_run_is_stopped_once_its_summaries_reach_the_step(
    tmp_path, monkeypatch):
  monkeypatch.setattr(upstream_vs_port, 'STOP_POLL_SECONDS', 0.05)
  events = tmp_path / 'train'
  # A stand-in for a training: logs one step a tenth of a second, forever,
  # and says so when SIGTERM ends it.
  script = (
      'import signal, sys, time\n'
      'import tensorflow as tf\n'
      'def done(*_):\n'
      '  print("terminated", flush=True); sys.exit(143)\n'
      'signal.signal(signal.SIGTERM, done)\n'
      f'writer = tf.summary.create_file_writer({str(events)!r})\n'
      'step = 0\n'
      'while True:\n'
      '  step += 1\n'
      '  with writer.as_default():\n'
      '    tf.summary.scalar("train/xent", 1.0, step=step)\n'
      '  writer.flush()\n'
      '  time.sleep(0.1)\n')
  args = upstream_vs_port.parse_args(['--stop_after_step', '5'])
  stop = upstream_vs_port.stopper(args, str(events), 'train/xent')
  log = tmp_path / 'log.txt'
  code, _ = upstream_vs_port.run_logged([sys.executable, '-c', script],
                                        str(log), str(tmp_path), stop=stop)
  assert code == 0
  text = log.read_text()
  assert 'terminated' in text and 'stopped by upstream_vs_port.py' in text
  latest = upstream_vs_port.latest_step(str(events), 'train/xent')
  assert 5 <= latest < 100
  assert upstream_vs_port.latest_step(str(events), 'other/tag') == -1
  # The file's last record cut short (being written, or cut by the stop):
  # it is left out, and the whole records before it are read.
  path = next(events.glob('events.out.*'))
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) - 5)
  assert upstream_vs_port.latest_step(str(events), 'train/xent') == latest - 1
  steps = [step for step, _, _ in
           upstream_vs_port.read_scalars(str(events))['train/xent']]
  assert steps == list(range(1, latest))
  # Without --stop_after_step, whole runs: no stop.
  assert upstream_vs_port.stopper(upstream_vs_port.parse_args([]),
                                  str(events), 'train/xent') is None


def test_fisher_exact_test_matches_known_tables():
  # Fisher's tea-tasting table, and one worked by hand: with 2 successes
  # among 10, both in the group of 4: C(4,2) / C(10,2) = 6/45; the other
  # tables (1 or 0 in that group) are each more likely.
  assert upstream_vs_port.fisher_exact(3, 1, 1, 3) == pytest.approx(
      34 / 70)
  assert upstream_vs_port.fisher_exact(2, 2, 0, 6) == pytest.approx(6 / 45)
  assert upstream_vs_port.fisher_exact(0, 6, 2, 2) == pytest.approx(6 / 45)
  assert upstream_vs_port.fisher_exact(1, 1, 1, 1) == pytest.approx(1)


def test_rank_sum_test_matches_splits_counted_by_hand():
  # [1, 2] against [3, 4, 5]: of the C(5, 2) = 10 splits, only {1, 2} and
  # {4, 5} lie as far from the mean rank sum (6) as 3 does.
  assert upstream_vs_port.rank_sum_exact([1, 2], [3, 4, 5]) == pytest.approx(
      2 / 10)
  # [1, 3] against [2, 4]: rank sums of the 6 splits are 3, 4, 5, 5, 6, 7
  # around a mean of 5; four lie at least 1 away.
  assert upstream_vs_port.rank_sum_exact([1, 3], [2, 4]) == pytest.approx(
      4 / 6)
  # Ties share their mean rank: [0.5, 0.5] against [0.5, 2] ranks 2, 2 vs
  # 2, 4; splits 4, 4, 6, 4, 6, 6 around 5 are all 1 away.
  assert upstream_vs_port.rank_sum_exact([0.5, 0.5], [0.5, 2]) == 1.0
  # The order within a group does not matter; swapping groups neither.
  a, b = [1.9, 1.5, 2.7], [2.2, 2.9, 2.4, 2.1]
  assert upstream_vs_port.rank_sum_exact(a, b) == pytest.approx(
      upstream_vs_port.rank_sum_exact(b[::-1], a[::-1]))


def test_tally_counts_recovered_runs_once_across_reports(tmp_path, capsys):
  ends = [64, 128, 192, 256, 312, 320, 384, 448]
  def run(seed, after_switch):  # A curve with this value over (312, 384].
    curve = [after_switch if e in (320, 384) else 3.0 for e in ends]
    return {'seed': seed, 'xent_curve': curve}
  upstream = {'mode': 'none', 'side': 'upstream',
              'runs': [run(0, 1.5), run(1, 2.0)]}
  first = {'epochs': 2, 'log_steps': ends, 'cells': {
      'none/upstream': upstream,
      'none/port': {'mode': 'none', 'side': 'port',
                    'runs': [run(0, 2.1), run(1, 1.6)]},
      'no_progressive/port': {'mode': 'no_progressive', 'side': 'port',
                              'runs': [run(0, 1.0)]}}}
  # A second report holding the same upstream runs and two port runs.
  second = {'epochs': 2, 'log_steps': ends, 'cells': {
      'none/upstream': upstream,
      'none/port': {'mode': 'none', 'side': 'port',
                    'runs': [run(0, 2.5), run(1, 2.2)]}}}
  paths = []
  for name, results in (('a.json', first), ('b.json', second)):
    (tmp_path / name).write_text(json.dumps(results))
    paths.append(str(tmp_path / name))
  args = upstream_vs_port.parse_args(['--tally', ','.join(paths)])
  assert upstream_vs_port.check_args(args) is None
  assert upstream_vs_port.main(['--tally', ','.join(paths)]) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == ('upstream: 1 of 2 none runs below 1.7 after the first '
                    'switch (1.50, 2.00)')
  assert out[1] == ('port: 1 of 4 none runs below 1.7 after the first '
                    'switch (2.10, 1.60, 2.50, 2.20)')
  expected = upstream_vs_port.fisher_exact(1, 1, 1, 3)
  assert out[2] == f"Fisher's exact test, two-sided: p = {expected:.3f}"
  ranked = upstream_vs_port.rank_sum_exact([1.5, 2.0], [2.1, 1.6, 2.5, 2.2])
  assert out[3] == ('the values themselves, Wilcoxon rank-sum test (exact, '
                    f'two-sided): p = {ranked:.3f}; medians 1.75 (upstream), '
                    '2.15 (port)')
  args = upstream_vs_port.parse_args(['--tally', str(tmp_path / 'c.json')])
  assert upstream_vs_port.check_args(args) == (
      f"--tally: no report at {tmp_path / 'c.json'}.")
  # The boundary belongs to 2-epoch runs: a report of another length, or a
  # file that is no report, is refused.
  (tmp_path / 'ten.json').write_text(json.dumps(dict(second, epochs=10)))
  (tmp_path / 'other.json').write_text('[1, 2]')
  for name, problem in (
      ('ten.json', 'is a report of 10-epoch runs; the boundary 1.7 was read '
       'off 2-epoch runs, so only those are counted.'),
      ('other.json', 'is not a report of this script (write one with '
       '--report_only).')):
    args = upstream_vs_port.parse_args(
        ['--tally', f'{paths[0]},{tmp_path / name}'])
    assert upstream_vs_port.check_args(args) == (
        f'--tally: {tmp_path / name} {problem}')


def test_a_prefix_run_is_recorded_with_its_stopping_step(tmp_path, capsys,
                                                         monkeypatch):
  # The training itself is what the test above stops; here the driver's
  # loop records and prints what a stopped training returned.
  monkeypatch.setattr(upstream_vs_port, 'train_port',
                      lambda *_: {'top1': None, 'stopped_at_step': 450,
                                  'process_seconds': 12.0})
  args = upstream_vs_port.parse_args(
      ['--sides', 'port', '--modes', 'none', '--seeds', '1',
       '--stop_after_step', '448', '--output_dir', str(tmp_path)])
  assert upstream_vs_port.run_all(args) == 0
  out = capsys.readouterr().out
  assert 'port/none/seed_0: stopped at step 450 in 12 s' in out
  with open(tmp_path / 'port' / 'none' / 'seed_0' / 'summary.json') as f:
    assert json.load(f)['stopped_at_step'] == 450


def test_stop_after_step_must_fall_inside_the_run():
  args = upstream_vs_port.parse_args(['--stop_after_step', '937'])
  assert upstream_vs_port.check_args(args) == (
      '--stop_after_step must be from 0 (whole runs) to 936, the last step '
      'of a 2-epoch run.')


@pytest.mark.parametrize('flags,message', [
    (['--config', '/nonexistent'], '--config must be a port run folder'),
    (['--steps', '12'], '--steps must be a positive multiple of 8'),
    (['--state', 'x/ckpt-312', '--init', 'y/model.ckpt-0'],
     'give --state (go on from a stage end) or --init'),
    (['--write_upstream_stream', '/tmp/s'],
     '--write_upstream_stream needs --automl'),
    (['--parts', 'weight'], "--parts takes weights and/or slots, not 'weight'"),
    (['--state', 'x/ckpt'], 'expected a checkpoint named ckpt-N'),
    (['--state', '/nonexistent/model.ckpt-312'],
     '--state: /nonexistent/model.ckpt-312 does not exist'),
    (['--hparam_str', 'data.enhance_pixel=upstream'],
     "--hparam_str: unknown config key 'data.enhance_pixel'"),
    (['--hparam_str', 'data.enhance_pixels=gimp'],
     "--hparam_str: data.enhance_pixels='gimp' is out of range"),
])
def test_stage_switch_refuses_bad_flags_in_one_line(tmp_path, flags, message):
  config = tmp_path / 'run'
  config.mkdir()
  (config / 'config.yaml').write_text('{}\n')
  if '--config' not in flags and '--write_upstream_stream' not in flags:
    flags = ['--config', str(config)] + flags
  assert message in bench_refusal(STAGE_SWITCH, flags)


def test_stage_switch_trains_the_runs_own_seed_unless_told(tiny_config,
                                                          tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top
  import stage_switch  # pylint: disable=g-import-not-at-top
  config = tiny_config('runtime.seed=5')
  run = tmp_path / 'run'
  run.mkdir()
  saved = config.as_dict()
  # A run saved before data.enhance_pixels existed: today's default.
  del saved['data']['enhance_pixels']
  (run / 'config.yaml').write_text(yaml.safe_dump(saved))
  for seed, hparam_str, expected in (
      (None, '', (5, 'pil')), (3, 'data.enhance_pixels=upstream',
                              (3, 'upstream'))):
    trainer, work = stage_switch.port_trainer(str(run), seed, hparam_str)
    shutil.rmtree(work)
    assert (trainer.config.runtime.seed,
            trainer.config.data.get('enhance_pixels')) == expected
  assert stage_switch.parse_args(['--config', str(run)]).seed is None


def test_tf_runtime_speed_times_the_model_and_each_op(tmp_path):
  output = tmp_path / 'speed.json'
  subprocess.run([sys.executable, TF_RUNTIME_SPEED, '--output', str(output),
                  '--size', '32', '--batch', '2', '--calls', '1',
                  '--warmup', '1'], check=True, capture_output=True)
  result = json.loads(output.read_text())
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  assert result['tensorflow'] == tf.__version__
  assert (result['size'], result['batch']) == (32, 2)
  assert result['model_step_seconds'] > 0
  assert len(result['op_seconds']) == 6
  assert all(seconds > 0 for seconds in result['op_seconds'].values())


@pytest.mark.parametrize('flags, message', [
    (['--size', '8'],
     '--size must be 32 or more, --batch and --calls 1 or more.'),
    (['--calls', 'two'], "argument --calls: invalid int value: 'two'"),
])
def test_tf_runtime_speed_refuses_bad_flags_in_one_line(tmp_path, flags,
                                                        message):
  assert bench_refusal(
      TF_RUNTIME_SPEED, ['--output', str(tmp_path / 'x.json'), *flags]) == (
          f'tf_runtime_speed.py: error: {message}')
  assert not (tmp_path / 'x.json').exists()


@pytest.mark.parametrize('flags, message', [
    (['--seeds', 'two'], "argument --seeds: invalid int value: 'two'"),
    (['--seeds', '0'], '--epochs and --seeds must be at least 1.'),
    (['--report_only', '--nonsense'], 'unrecognized arguments: --nonsense'),
    (['--report_only', '--output_dir', '{empty}'],
     'no finished runs in {empty}: run without --report_only first.'),
])
def test_upstream_vs_port_refuses_bad_flags_in_one_line(flags, message,
                                                        tmp_path, capsys):
  flags = [f.format(empty=tmp_path) for f in flags]
  message = message.format(empty=tmp_path)
  with pytest.raises(SystemExit) as exit_info:
    upstream_vs_port.main(flags)
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip() == (
      f'upstream_vs_port.py: error: {message}')
