"""bench/lockstep.py without upstream: its flag checks, its arithmetic, and
the port's side of a lockstep run on the tiny config."""
import os
import sys

import numpy as np
import pytest

from conftest import REPO
from conftest import bench_refusal
from conftest import flags_over
from conftest import one_device

sys.path.insert(0, os.path.join(REPO, 'bench'))
import lockstep  # noqa: E402  pylint: disable=g-import-not-at-top

LOCKSTEP = os.path.join(REPO, 'bench', 'lockstep.py')


def test_weights_are_recorded_at_powers_of_two_and_at_the_end():
  assert lockstep.record_points(8) == [1, 2, 4, 8]
  assert lockstep.record_points(24) == [1, 2, 4, 8, 16, 24]
  assert lockstep.record_points(1) == [1]


def test_relative_distance_is_taken_over_all_variables_together():
  b = {'x': np.array([3.0, 0.0], np.float32), 'y': np.array([[4.0]])}
  a = {'x': np.array([3.0, 1.0], np.float32), 'y': np.array([[4.0]])}
  assert lockstep.relative_distance(a, b) == pytest.approx(1.0 / 5.0)
  assert lockstep.relative_distance(b, b) == 0.0


def test_window_means_group_whole_windows():
  values = list(range(16)) + [100]
  assert lockstep.window_means(values) == [3.5, 11.5]


@pytest.mark.parametrize('flags, message', [
    (['--steps', '12'], '--steps must be a positive multiple of 8'),
    (['--config', '/nonexistent'],
     '--config must be a port run folder with a config.yaml'),
    (['--state', '{run}/ckpt-3'],
     "--state must be upstream's checkpoint model.ckpt-N"),
    (['--state', '{run}/model.ckpt-9'],
     '--state: {run}/model.ckpt-9 does not exist'),
    (['--state', '{run}/model.ckpt-5'],
     '--config has no ckpt-5: the port run needs its own checkpoint of the '
     'same step (or start from model.ckpt-0)'),
    (['--state', '{run}/model.ckpt-0', '--automl', '{run}'],
     "--automl must be upstream's efficientnetv2/ folder (it holds main.py)"),
])
def test_bad_flags_get_one_line_and_exit_2(tmp_path, flags, message):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.yaml').write_text('{}\n')
  for step in (0, 5):
    (run / f'model.ckpt-{step}.index').write_text('')
  argv = flags_over({'--config': str(run), '--state': f'{run}/model.ckpt-0'},
                    flags, run=run)
  assert bench_refusal(LOCKSTEP, argv) == (
      f'lockstep.py: error: {message.format(run=run)}')


def test_the_ports_side_replays_its_own_batches_exactly(tiny_config,
                                                         tmp_path):
  from automl_effnetv2 import train_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config('data.mixup_alpha=0,data.cutmix_alpha=0')
  trainer = train_lib.Trainer(config, str(tmp_path / 'run'),
                              strategy=one_device())
  names = {id(v): v.path for v in trainer.steps.train_variables}
  stage = trainer.plan.stages[0]
  batches = str(tmp_path / 'batches.npz')
  lockstep.save_batches(trainer, stage, 0, 3, batches)
  saved = np.load(batches)
  size, batch = stage.image_size, config.train.batch_size
  assert saved['images'].shape == (3, batch, size, size, 3)
  assert saved['images'].dtype == np.uint8
  assert saved['labels'].shape == (3, batch)
  start = trainer.checkpoints.checkpoint.write(str(tmp_path / 'start'))
  before = lockstep._weights(trainer, names)  # pylint: disable=protected-access

  # The saved batches give the losses of the stage's own batches.
  trainer.steps.reset_train_sums()
  trainer.run_steps(trainer.stage_iterator(stage, 0), 3)
  direct = float(trainer.steps.loss_sum.result())
  trainer.checkpoints.checkpoint.read(start).assert_existing_objects_matched()
  dataset = lockstep.saved_batches(batches, config.data.num_classes)
  losses, _, weights = lockstep.port_steps(trainer, names, dataset, 3)
  assert sum(losses) == pytest.approx(direct, rel=1e-6)
  assert sorted(weights) == [1, 2, 3]
  assert lockstep.relative_distance(weights[3], before) > 1e-4

  # The same start and batches again: the same weights, bit for bit.
  trainer.checkpoints.checkpoint.read(start).assert_existing_objects_matched()
  again = lockstep.port_steps(trainer, names, dataset, 3)
  assert again[0] == losses
  assert lockstep.relative_distance(again[2][3], weights[3]) == 0.0

  # The control's perturbation is about one float32 rounding per weight.
  trainer.checkpoints.checkpoint.read(start).assert_existing_objects_matched()
  lockstep.perturb(trainer)
  moved = lockstep.relative_distance(lockstep._weights(trainer, names),  # pylint: disable=protected-access
                                     before)
  assert 0.5 * lockstep.PERTURBATION < moved < 2 * lockstep.PERTURBATION
