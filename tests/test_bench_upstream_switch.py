"""bench/upstream_switch.py without upstream: its flag checks, the inputs it
hands upstream's side (the port run's initial weights under upstream's
names, and that run's own batches), and its weight loading into a TF1
graph."""
import argparse
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from conftest import bench_refusal
from conftest import flags_over
from conftest import write_upstream_state

sys.path.insert(0, os.path.join(REPO, 'bench'))
import upstream_switch  # noqa: E402  pylint: disable=g-import-not-at-top

UPSTREAM_SWITCH = os.path.join(REPO, 'bench', 'upstream_switch.py')


@pytest.mark.parametrize('flags, message', [
    (['--after', '12'], '--after must be a positive multiple of 8'),
    (['--config', '/nonexistent'],
     '--config must be a port run folder with a config.yaml'),
    (['--upstream_run', '{run}/port'],
     '--upstream_run must be an upstream run folder with config.yaml and '
     'model.ckpt-0'),
    (['--automl', '{run}'],
     "--automl must be upstream's efficientnetv2/ folder (it holds main.py)"),
    (['--legacy_python', '{run}/no_python'],
     '--legacy_python must be the python of the environment from '
     'patches/upstream-requirements.txt'),
    (['--output', '{run}/no/result.json'],
     '--output: the folder of {run}/no/result.json does not exist'),
])
def test_bad_flags_get_one_line_and_exit_2(tmp_path, flags, message):
  port, upstream, automl = (tmp_path / name for name in
                            ('port', 'upstream', 'automl'))
  for folder in (port, upstream, automl):
    folder.mkdir()
  for folder in (port, upstream):
    (folder / 'config.yaml').write_text('{}\n')
  (upstream / 'model.ckpt-0.index').write_text('')
  (automl / 'main.py').write_text('')
  argv = flags_over({'--config': str(port), '--upstream_run': str(upstream),
                     '--automl': str(automl),
                     '--legacy_python': sys.executable},
                    flags, run=tmp_path)
  assert bench_refusal(UPSTREAM_SWITCH, argv) == (
      f'upstream_switch.py: error: {message.format(run=tmp_path)}')


def test_switch_xent_is_the_mean_of_the_first_72_steps_after_the_switch():
  values = [2.0] * 72 + [100.0]
  assert upstream_switch.switch_xent(values) == pytest.approx(2.0)
  assert upstream_switch.switch_xent(
      [1.0] * 36 + [2.0] * 36) == pytest.approx(1.5)
  assert upstream_switch.switch_xent([1.0] * 71) is None


def test_weights_load_into_a_tf1_graph_by_name_and_all_trainables_are_set():
  tf1 = tf.compat.v1
  with tf.Graph().as_default():
    kernel = tf1.get_variable('net/kernel', initializer=tf.zeros([2]))
    tf1.get_variable('net/moving_mean', initializer=tf.zeros([]),
                     trainable=False)
    with tf1.Session() as sess:
      sess.run(tf1.global_variables_initializer())
      upstream_switch._load_weights(  # pylint: disable=protected-access
          tf1, sess, {'net/kernel': np.array([1.0, 2.0], np.float32)})
      assert sess.run(kernel).tolist() == [1.0, 2.0]
      with pytest.raises(ValueError, match='no upstream variable net/bias'):
        upstream_switch._load_weights(  # pylint: disable=protected-access
            tf1, sess, {'net/kernel': np.zeros([2], np.float32),
                        'net/bias': np.zeros([], np.float32)})
      with pytest.raises(ValueError, match='no port weight for net/kernel'):
        upstream_switch._load_weights(  # pylint: disable=protected-access
            tf1, sess, {'net/moving_mean': np.zeros([], np.float32)})
      # Refused before anything was assigned.
      assert sess.run(kernel).tolist() == [1.0, 2.0]


def test_upstream_gets_the_port_runs_initial_weights_and_own_batches(
    tiny_config, tmp_path):
  from automl_effnetv2 import train_lib  # pylint: disable=g-import-not-at-top
  # Two stages of 8 steps; images that stay whole levels (no mixing).
  config = tiny_config('train.epochs=0.0045,data.mixup_alpha=0,'
                       'data.cutmix_alpha=0,model.dropout_rate=0,'
                       'model.survival_prob=1.0,runtime.seed=3')
  port_run, upstream_run = tmp_path / 'port', tmp_path / 'upstream'
  for folder in (port_run, upstream_run):
    folder.mkdir()
    config.save_to_yaml(str(folder / 'config.yaml'))
  # Upstream's names come from its model.ckpt-0; its values (another seed's)
  # must not be what upstream is given.
  other = tiny_config('data.mixup_alpha=0,data.cutmix_alpha=0,'
                      'runtime.seed=4')
  write_upstream_state(train_lib.Trainer(other, str(tmp_path / 'other')),
                       str(upstream_run / 'model.ckpt-0'))

  work = tmp_path / 'work'
  work.mkdir()
  args = argparse.Namespace(config=str(port_run),
                            upstream_run=str(upstream_run), after=8)
  plan, port_loss, seed = upstream_switch.write_inputs(args, str(work))
  assert seed == 3

  # The same run again, from the start: what its own first steps see.
  run = train_lib.Trainer(config, str(tmp_path / 'again'))
  first, second = run.plan.stages[:2]
  assert second.max_steps - first.max_steps >= 8
  with open(work / 'plan.json', encoding='utf-8') as f:
    assert json.load(f)['stages'] == plan
  assert [(s['size'], s['steps']) for s in plan] == [
      (first.image_size, first.max_steps), (second.image_size, 8)]

  with np.load(work / 'init.npz') as init:
    reader = tf.train.load_checkpoint(str(upstream_run / 'model.ckpt-0'))
    stored = reader.get_variable_to_shape_map()
    assert set(init.files) <= set(stored)
    from automl_effnetv2 import pretrained  # pylint: disable=g-import-not-at-top
    names = pretrained.upstream_variable_names(run.model)
    own = {names[v.path]: v.numpy() for v in run.steps.train_variables}
    assert set(own) <= set(init.files)
    for name, value in own.items():
      np.testing.assert_array_equal(init[name], value)
    assert any(not np.array_equal(init[name], reader.get_tensor(name))
               for name in own)

  x, y = (run.strategy.experimental_local_results(t)[0].numpy()
          for t in next(run.stage_iterator(second, first.max_steps)))
  with np.load(plan[1]['batches']) as saved:
    assert saved['images'].shape == (8, config.train.batch_size,
                                     second.image_size, second.image_size, 3)
    np.testing.assert_allclose(saved['images'][0] / 127.5 - 1.0, x,
                               atol=1e-6)
    assert saved['labels'][0].tolist() == np.argmax(y, -1).tolist()

  # The loss the port logs for the run's first step, from its own weights
  # on its own first batch.
  run.steps.reset_train_sums()
  run.run_steps(run.stage_iterator(first, 0), 1)
  assert port_loss == pytest.approx(float(run.steps.loss_sum.result()),
                                    rel=1e-6)

  # A second stage shorter than --after is refused in one line.
  with pytest.raises(SystemExit) as exit_info:
    upstream_switch.write_inputs(argparse.Namespace(
        config=str(port_run), upstream_run=str(upstream_run), after=64),
                                 str(work))
  assert exit_info.value.code == 2
