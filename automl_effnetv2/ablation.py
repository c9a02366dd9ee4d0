r"""Runs a progressive-learning ablation study: modes x seeds, then a report.

  python -m automl_effnetv2.ablation --dataset_cfg=fashion_mnist \
      --modes=none,no_progressive --seeds=2 --epochs=3 \
      --output_dir=runs/ablation

Each run is `main.py --mode=traineval --ablation=<mode>` in its own process
and folder (<output_dir>/<mode>/seed_<k>), so an interrupted study resumes
run by run: finished runs are skipped, unfinished ones resume from their last
checkpoint. The report (written after every run) is results.csv, results.md
(final top-1 mean and std, wall time and images/s per mode) and results.png
(eval top-1 against training time, one line per mode).
"""
import csv
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from automl_effnetv2 import progressive
from automl_effnetv2.run_dir import read_metrics

FLAGS = flags.FLAGS
flags.DEFINE_string('dataset_cfg', 'fashion_mnist', 'Dataset training config.')
flags.DEFINE_string('model_name', 'efficientnetv2-b0', 'Model name.')
flags.DEFINE_list('modes', ['none', 'no_progressive'], 'Ablation modes, from '
                  + ', '.join(progressive.ABLATIONS) + '.')
flags.DEFINE_integer('seeds', 2, 'Runs per mode (seeds 0..seeds-1).')
flags.DEFINE_float('epochs', None, 'Overrides train.epochs for every run.')
flags.DEFINE_string('hparam_str', '', 'Extra overrides for every run.')
flags.DEFINE_string('data_dir', None, 'As main.py --data_dir.')
flags.DEFINE_string('output_dir', None, 'Where runs and the report go.')


def run_dir(output_dir, mode, seed):
  return os.path.join(output_dir, mode, f'seed_{seed}')


def is_finished(model_dir) -> bool:
  final = read_metrics(model_dir).get('final', {})
  return bool(final) and final.get('global_step') == final.get('total_steps')


def run_command(mode, seed, model_dir, dataset_cfg, model_name, epochs,
                hparam_str, data_dir) -> List[str]:
  overrides = [f'runtime.seed={seed}']
  if epochs is not None:
    overrides.append(f'train.epochs={epochs}')
  if hparam_str:
    overrides.append(hparam_str)
  command = [sys.executable, '-m', 'automl_effnetv2.main',
             '--mode=traineval', f'--ablation={mode}',
             f'--dataset_cfg={dataset_cfg}', f'--model_name={model_name}',
             f'--model_dir={model_dir}', f'--hparam_str={",".join(overrides)}']
  if data_dir:
    command.append(f'--data_dir={data_dir}')
  return command


def summarize(output_dir, modes, seeds) -> List[Dict]:
  """One row per finished run."""
  rows = []
  for mode in modes:
    for seed in range(seeds):
      metrics = read_metrics(run_dir(output_dir, mode, seed))
      final = metrics.get('final')
      if not final:
        continue
      rows.append({
          'mode': mode, 'seed': seed,
          'top1': final['eval/acc_top1'], 'top5': final['eval/acc_top5'],
          'global_step': final['global_step'],
          'train_seconds': final.get('train_seconds'),
          'images_per_second': final.get('train_images_per_second'),
          'finished': final['global_step'] == final.get('total_steps'),
      })
  return rows


def write_report(output_dir, modes, seeds, command_line):
  rows = summarize(output_dir, modes, seeds)
  with open(os.path.join(output_dir, 'results.csv'), 'w', newline='',
            encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=[
        'mode', 'seed', 'top1', 'top5', 'global_step', 'train_seconds',
        'images_per_second', 'finished'])
    writer.writeheader()
    writer.writerows(rows)
  lines = [f'Command: `{command_line}`', '',
           '| mode | runs | final top-1 (mean ± std) | training time '
           '(mean) | images/s (mean) |', '|---|---|---|---|---|']
  for mode in modes:
    done = [r for r in rows if r['mode'] == mode and r['finished']]
    if not done:
      lines.append(f'| {mode} | 0 | – | – | – |')
      continue
    top1 = [100 * r['top1'] for r in done]
    std = statistics.stdev(top1) if len(top1) > 1 else 0.0
    seconds = statistics.mean(r['train_seconds'] or 0 for r in done)
    speed = statistics.mean(r['images_per_second'] or 0 for r in done)
    lines.append(f'| {mode} | {len(done)} | {statistics.mean(top1):.2f} ± '
                 f'{std:.2f} % | {seconds / 60:.1f} min | {speed:.0f} |')
  with open(os.path.join(output_dir, 'results.md'), 'w',
            encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')
  plot_curves(output_dir, modes, seeds)
  return lines


def plot_curves(output_dir, modes, seeds):
  """Eval top-1 against cumulative training time, mean over seeds per mode."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6, 4))
  for mode in modes:
    curves = []
    for seed in range(seeds):
      evals = read_metrics(run_dir(output_dir, mode, seed)).get('evals', [])
      points = [(e['train_seconds'] / 60, 100 * e['eval/acc_top1'])
                for e in evals if e.get('train_seconds') is not None]
      if points:
        curves.append(points)
    if not curves:
      continue
    length = min(len(c) for c in curves)
    xs = [statistics.mean(c[i][0] for c in curves) for i in range(length)]
    ys = [statistics.mean(c[i][1] for c in curves) for i in range(length)]
    runs = f'{len(curves)} seed' + ('s' if len(curves) != 1 else '')
    ax.plot(xs, ys, marker='o', label=f'{mode} ({runs})')
  ax.set_xlabel('training time (min)')
  ax.set_ylabel('eval top-1 (%)')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(output_dir, 'results.png'), dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  if not FLAGS.output_dir:
    raise app.UsageError('--output_dir is required')
  for mode in FLAGS.modes:
    try:
      progressive.check_ablation(mode)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  command_line = ' '.join(['python -m automl_effnetv2.ablation'] +
                          sys.argv[1:])
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=repo + os.pathsep +
             os.environ.get('PYTHONPATH', ''))
  for seed in range(FLAGS.seeds):
    for mode in FLAGS.modes:
      model_dir = run_dir(FLAGS.output_dir, mode, seed)
      if is_finished(model_dir):
        print(f'{mode} seed {seed}: finished, skipped', flush=True)
        continue
      os.makedirs(model_dir, exist_ok=True)
      print(f'{mode} seed {seed}: training in {model_dir}', flush=True)
      started = time.time()
      with open(os.path.join(model_dir, 'log.txt'), 'a',
                encoding='utf-8') as log:
        result = subprocess.run(
            run_command(mode, seed, model_dir, FLAGS.dataset_cfg,
                        FLAGS.model_name, FLAGS.epochs, FLAGS.hparam_str,
                        FLAGS.data_dir),
            stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
      if result.returncode:
        print(f'{mode} seed {seed}: failed (exit {result.returncode}); see '
              f'{model_dir}/log.txt. Rerun the same command to resume.',
              file=sys.stderr)
        sys.exit(result.returncode)
      print(f'{mode} seed {seed}: done in {time.time() - started:.0f} s',
            flush=True)
      write_report(FLAGS.output_dir, FLAGS.modes, FLAGS.seeds, command_line)
  print('\n'.join(write_report(FLAGS.output_dir, FLAGS.modes, FLAGS.seeds,
                               command_line)))


if __name__ == '__main__':
  app.run(main)
