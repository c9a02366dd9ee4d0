r"""Seconds per training step at each image size, measured side by side.

  python -m automl_effnetv2.study.step_times --dataset_cfg=fashion_mnist \
      --sizes=28,40,48,52,56,64 --output=runs/step_times.json

One Trainer of the given config runs its real training step (input
pipeline, augmentation, model, optimizer, EMA) at every size in turn, in
several rounds, so that drifts of the machine's speed hit every size alike.
The study runner multiplies these times by the steps each stage trains to get
a run's normalized training time, which a busy machine cannot distort.
"""
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, Sequence

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from automl_effnetv2 import cli


def measure(config, sizes: Sequence[int], steps: int = 20, rounds: int = 3,
            warmup_calls: int = 2, data_dir=None) -> Dict[str, object]:
  """Median seconds per step at each size (a dict keyed by str(size)).

  Each size gets its own input pipeline with the config's last-stage
  regularization; the first `warmup_calls` calls per size (tracing, buffers)
  are not timed.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top
  from automl_effnetv2 import train_lib  # pylint: disable=g-import-not-at-top
  trainer = train_lib.Trainer(config, tempfile.mkdtemp(prefix='step_times_'),
                              data_dir=data_dir)
  last = trainer.plan.stages[-1]
  iterators = {}
  for size in sizes:
    stage = dataclasses.replace(last, image_size=int(size))
    iterators[size] = trainer.stage_iterator(stage, 0)
    for _ in range(warmup_calls):
      trainer.run_steps(iterators[size], steps)
      float(trainer.steps.loss_sum.result())  # Waits for the steps.
  samples = {size: [] for size in sizes}
  for _ in range(rounds):
    for size in sizes:
      started = time.perf_counter()
      trainer.run_steps(iterators[size], steps)
      float(trainer.steps.loss_sum.result())
      samples[size].append((time.perf_counter() - started) / steps)
  return {
      'seconds_per_step': {str(s): statistics.median(v)
                           for s, v in samples.items()},
      'samples': {str(s): v for s, v in samples.items()},
      'steps_per_sample': steps,
      'rounds': rounds,
      'batch_size': int(config.train.batch_size),
      'model_name': config.model.model_name,
  }


FLAGS = flags.FLAGS


def define_flags():
  """The command-line flags; defined only when run as a program, so that
  importing this module next to main.py (which has flags of the same
  names) works."""
  flags.DEFINE_string('dataset_cfg', 'fashion_mnist', 'Training config.')
  flags.DEFINE_string('model_name', 'efficientnetv2-b0', 'Model name.')
  flags.DEFINE_list('sizes', ['28', '40', '48', '52', '56', '64'],
                    'Image sizes to time.')
  flags.DEFINE_integer('steps', 20, 'Steps per timed call.')
  flags.DEFINE_integer('rounds', 3, 'Timed calls per size, taken in turns.')
  flags.DEFINE_string('hparam_str', '', 'Extra overrides.')
  flags.DEFINE_string('data_dir', None, 'As main.py --data_dir.')
  flags.DEFINE_string('output', None, 'Where the JSON goes (required).')


def main(argv):
  del argv
  from automl_effnetv2 import hparams  # pylint: disable=g-import-not-at-top
  from automl_effnetv2 import run_config  # pylint: disable=g-import-not-at-top
  if not FLAGS.output:
    cli.usage_error('--output is required (the JSON file to write)')
  try:
    sizes = [int(s) for s in FLAGS.sizes]
  except ValueError:
    cli.usage_error(f'--sizes={",".join(FLAGS.sizes)}: expected integers, '
                    'e.g. --sizes=28,64')
  try:
    config = run_config.build_config(FLAGS.model_name, FLAGS.dataset_cfg,
                                      FLAGS.hparam_str)
  except (hparams.ConfigError, ValueError) as e:
    cli.usage_error(str(e))
  result = measure(config, sizes, FLAGS.steps, FLAGS.rounds,
                   data_dir=FLAGS.data_dir)
  result['dataset_cfg'] = FLAGS.dataset_cfg
  os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
  tmp = FLAGS.output + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2, sort_keys=True)
  os.replace(tmp, FLAGS.output)
  for size, seconds in result['seconds_per_step'].items():
    print(f'{size} px: {seconds * 1000:.1f} ms/step')


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
