"""bench/switch_states.py: its flag checks, its arithmetic, and one state
read from the port's checkpoint and from an upstream-named one."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from conftest import bench_refusal
from conftest import cli_env
from conftest import flags_over
from conftest import one_device
from conftest import write_upstream_state

sys.path.insert(0, os.path.join(REPO, 'bench'))
import switch_states  # noqa: E402  pylint: disable=g-import-not-at-top

SWITCH_STATES = os.path.join(REPO, 'bench', 'switch_states.py')


def _touch(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8'):
    pass


def test_patterns_expand_in_number_order_and_each_state_once(tmp_path):
  for name in ('a/seed_10/ckpt-8', 'a/seed_9/ckpt-8', 'b/seed_9/model.ckpt-8'):
    _touch(str(tmp_path / name) + '.index')
  found, missing = switch_states.expand_states(
      f'{tmp_path}/*/seed_*/*ckpt-8, {tmp_path}/a/seed_9/ckpt-8')
  assert missing is None
  assert found == [f'{tmp_path}/a/seed_9/ckpt-8',
                   f'{tmp_path}/a/seed_10/ckpt-8',
                   f'{tmp_path}/b/seed_9/model.ckpt-8']
  assert switch_states.expand_states(f'{tmp_path}/c/ckpt-8') == (
      None, f'{tmp_path}/c/ckpt-8')


def test_steps_and_labels_come_from_the_names():
  assert switch_states.state_step('x/model.ckpt-312') == 312
  assert switch_states.state_step('x/ckpt-0') == 0
  assert switch_states.state_step('x/ckpt-3a') is None
  assert switch_states.state_step('x/weights-3') is None
  assert switch_states.label('/r/upstream/none/seed_4/model.ckpt-312') == (
      'upstream/none/seed_4')


def test_geometric_and_root_mean_squares_pool_all_arrays():
  assert switch_states.geometric_mean(
      [np.array([1.0, 4.0]), np.array([[16.0]])]) == pytest.approx(4.0)
  assert switch_states.root_mean_square(
      [np.array([3.0]), np.array([[-4.0], [0.0]])]) == pytest.approx(
          math.sqrt(25.0 / 3.0))
  assert math.isnan(switch_states.root_mean_square([]))


@pytest.mark.parametrize('flags, message', [
    (['--config', '/nonexistent'],
     '--config must be a port run folder with a config.yaml'),
    (['--batches', '0'], '--batches must be at least 1'),
    (['--states', ''], '--states needs at least one checkpoint'),
    (['--output', '{run}/no/rows.json'],
     '--output: the folder {run}/no does not exist; create it first'),
    (['--states', '{run}/ckpt-9'],
     '--states: {run}/ckpt-9 names no checkpoint (no {run}/ckpt-9.index)'),
    (['--states', '{run}/ckpt-3,{run}/model.ckpt-5'],
     '--states must all be of one step, not [3, 5]'),
    (['--states', '{run}/*'],
     '--states: {run}/last is not a ckpt-N or model.ckpt-N checkpoint'),
])
def test_bad_flags_get_one_line_and_exit_2(tmp_path, flags, message):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.yaml').write_text('{}\n')
  for name in ('ckpt-3', 'model.ckpt-5', 'last'):
    _touch(str(run / name) + '.index')
  argv = flags_over({'--config': str(run), '--states': f'{run}/ckpt-3'},
                    flags, run=run)
  assert bench_refusal(SWITCH_STATES, argv) == (
      f'switch_states.py: error: {message.format(run=run)}')


def test_a_stage_end_reads_alike_from_both_sides_files(tiny_config, tmp_path,
                                                       capsys):
  from automl_effnetv2 import train_lib  # pylint: disable=g-import-not-at-top
  # As in the recipe the tool is for: no random layers, so that a forward
  # pass repeats the training step's.
  config = tiny_config('data.mixup_alpha=0,data.cutmix_alpha=0,'
                       'model.dropout_rate=0,model.survival_prob=1.0')
  run = tmp_path / 'run'
  run.mkdir()
  config.save_to_yaml(str(run / 'config.yaml'))
  trainer = train_lib.Trainer(config, str(tmp_path / 'train'),
                              strategy=one_device())
  first, second = trainer.plan.stages[:2]
  end = first.max_steps
  trainer.run_steps(trainer.stage_iterator(first, 0), end)
  trainer.checkpoints.checkpoint.write(str(run / f'ckpt-{end}'))
  write_upstream_state(trainer, str(run / f'model.ckpt-{end}'))
  velocities = [trainer.optimizer._velocities[i].numpy()  # pylint: disable=protected-access
                for i in range(len(trainer.steps.train_variables))]
  # The loss the run logs for the next stage's first step, from this state.
  trainer.steps.reset_train_sums()
  trainer.run_steps(trainer.stage_iterator(second, end), 1)
  first_step_xent = float(trainer.steps.xent_sum.result())

  output = tmp_path / 'rows.json'
  proc = subprocess.run(
      [sys.executable, SWITCH_STATES, '--config', str(run), '--states',
       f'{run}/*ckpt-{end}', '--batches', '1', '--output', str(output)],
      capture_output=True, text=True, check=False, env=cli_env())
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = json.loads(output.read_text())
  assert [os.path.basename(r['state']) for r in rows] == [
      f'ckpt-{end}', f'model.ckpt-{end}']
  port, upstream = rows
  for column in switch_states.COLUMNS:
    assert upstream[column] == pytest.approx(port[column], rel=1e-6), column
  assert port['mean_square'] == pytest.approx(
      switch_states.geometric_mean(velocities), rel=1e-6)
  assert 0 < port['mean_square'] < 1  # Moved down from RMSProp's start at 1.
  assert port['xent_batch_stats'] == pytest.approx(first_step_xent, rel=1e-4)
  assert port['xent_moving_stats'] != pytest.approx(
      port['xent_batch_stats'], rel=1e-4)
  assert f'the next stage at {second.image_size} px' in proc.stdout

  # A step that ends no stage is refused before any state is read.
  args = switch_states.parse_args(['--config', str(run), '--states', 'x'])
  with pytest.raises(SystemExit) as exit_info:
    switch_states.run(args, [f'{run}/ckpt-{end - 1}'], end - 1)
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      f'switch_states.py: error: --states are at step {end - 1}, which ends '
      f'no stage of --config (stage ends: {end})')

  # Upstream's weights without its optimizer slots (as in a released
  # checkpoint) are no training state: refused in one line.
  reader = tf.train.load_checkpoint(str(run / f'model.ckpt-{end}'))
  kept = {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if not name.endswith(('/RMSProp', '/RMSProp_1'))}
  weights_only = str(tmp_path / 'released' / f'model.ckpt-{end}')
  tf.raw_ops.SaveV2(prefix=weights_only, tensor_names=list(kept),
                    shape_and_slices=[''] * len(kept),
                    tensors=[tf.constant(v) for v in kept.values()])
  with pytest.raises(SystemExit) as exit_info:
    switch_states.run(args, [weights_only], end)
  assert exit_info.value.code == 2
  line = capsys.readouterr().err.strip().splitlines()[-1]
  assert line.startswith(
      f'switch_states.py: error: --states: {weights_only} is not a training '
      'state of the model in --config (')
  assert 'RMSProp' in line

  # The description is of RMSProp's slots: another optimizer is refused.
  config.override('train.optimizer=momentum')
  other = tmp_path / 'momentum_run'
  other.mkdir()
  config.save_to_yaml(str(other / 'config.yaml'))
  args = switch_states.parse_args(['--config', str(other), '--states', 'x'])
  with pytest.raises(SystemExit) as exit_info:
    switch_states.run(args, [f'{run}/ckpt-{end}'], end)
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.strip().splitlines()[-1] == (
      'switch_states.py: error: --config trains with train.optimizer='
      "momentum; the states are described by RMSProp's slots, so it must be "
      'rmsprop')
