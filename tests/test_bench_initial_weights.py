"""bench/initial_weights.py: its statistics, its flag checks, and draws of the
port's tiny model against upstream-named checkpoints of the same and of a
wrongly scaled initializer."""
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
from conftest import one_device

sys.path.insert(0, os.path.join(REPO, 'bench'))
import initial_weights  # noqa: E402  pylint: disable=g-import-not-at-top

INITIAL_WEIGHTS = os.path.join(REPO, 'bench', 'initial_weights.py')


def test_seeds_take_ranges_and_lists():
  assert initial_weights.parse_seeds('4-6,9') == [4, 5, 6, 9]
  assert initial_weights.parse_seeds('7') == [7]
  with pytest.raises(ValueError, match="--seeds 'a-b'"):
    initial_weights.parse_seeds('a-b')


def test_draw_statistics_of_known_samples():
  rng = np.random.default_rng(0)
  mean, std, kurtosis = initial_weights.draw_statistics(
      rng.normal(1.0, 2.0, 200_000))
  assert mean == pytest.approx(1.0, abs=0.02)
  assert std == pytest.approx(2.0, rel=0.01)
  assert kurtosis == pytest.approx(3.0, abs=0.05)
  # A uniform sample has kurtosis 1.8; a constant none.
  assert initial_weights.draw_statistics(
      rng.uniform(-1, 1, 200_000))[2] == pytest.approx(1.8, abs=0.02)
  assert initial_weights.draw_statistics(np.ones(5)) == (1.0, 0.0, 0.0)


def test_welch_t_and_constants():
  assert initial_weights.welch_t([1, 1, 1], [1, 1, 1]) == 0
  assert initial_weights.welch_t([1, 1, 1], [0, 0, 0]) == math.inf
  # Two samples of 3 with means 1 apart and variances 1: t = 1 / sqrt(2/3).
  assert initial_weights.welch_t([0, 1, 2], [1, 2, 3]) == pytest.approx(
      -1 / math.sqrt(2 / 3))


def test_correlation_finds_a_shared_draw_and_skips_other_sizes():
  rng = np.random.default_rng(1)
  a, b, c = rng.normal(size=400), rng.normal(size=400), rng.normal(size=9)
  z, pair = initial_weights.largest_correlation([a, c, b])
  assert z < 4.5 and pair == (0, 2)
  z, pair = initial_weights.largest_correlation([a, c, -a])
  assert z == pytest.approx(20.0) and pair == (0, 2)


def test_compare_flags_a_scaled_variable_only():
  rng = np.random.default_rng(2)
  draw = lambda scale: [rng.normal(0, scale, 1000) for _ in range(6)]
  port = {'a': draw(1.0), 'b': draw(1.0), 'gamma': [np.ones(4)] * 6}
  upstream = {'a': draw(1.0), 'b': draw(1.3), 'gamma': [np.ones(4)] * 6}
  rows, flagged = initial_weights.compare(port, upstream, max_t=5)
  assert flagged == ['b']
  assert rows['b']['std']['upstream'] == pytest.approx(1.3, rel=0.05)
  assert rows['gamma']['mean_t'] == 0
  upstream['gamma'] = [np.zeros(4)] * 6
  assert initial_weights.compare(port, upstream, max_t=5)[1] == ['b', 'gamma']


@pytest.mark.parametrize('flags,message', [
    ([], '--config must be a port run folder'),
    (['--config', '{run}', '--seeds', '1-x'], "--seeds '1-x': expected"),
    (['--config', '{run}'], '--upstream is required'),
    (['--config', '{run}', '--upstream', '/nonexistent/model.ckpt-0'],
     "--upstream '/nonexistent/model.ckpt-0': matches no checkpoint"),
    (['--config', '{run}', '--seeds', '1-2', '--upstream', '{ckpt}'],
     'at least 3 draws on each side (--seeds gives 2, --upstream 1)'),
])
def test_bad_flags_get_one_line(tmp_path, flags, message):
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.yaml').write_text('{}\n')
  (run / 'model.ckpt-0.index').write_text('')
  argv = [f.format(run=run, ckpt=run / 'model.ckpt-0') for f in flags]
  line = bench_refusal(INITIAL_WEIGHTS, argv)
  assert line.startswith('initial_weights.py: error: ') and message in line


def _write_upstream_init(trainer, prefix, scale_kernels=1.0):
  """The trainer's initial model weights as upstream's model.ckpt-0 names
  them; conv kernels times `scale_kernels`."""
  names = initial_weights.pretrained_names(trainer)
  tensors = {name: v.numpy() * (scale_kernels if v.path.endswith('/kernel')
                                and len(v.shape) == 4 else 1.0)
             for v, name in names}
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors),
                    shape_and_slices=[''] * len(tensors),
                    tensors=[tf.constant(v) for v in tensors.values()])


def test_the_port_against_its_own_draws_and_a_scaled_initializer(
    tiny_config, tmp_path):
  from automl_effnetv2 import train_lib  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  run = tmp_path / 'run'
  run.mkdir()
  config.save_to_yaml(str(run / 'config.yaml'))
  for seed in (10, 11, 12):
    config.runtime.seed = seed
    trainer = train_lib.Trainer(config, str(tmp_path / f'train_{seed}'),
                                strategy=one_device())
    for folder, scale in (('same', 1.0), ('scaled', 1.5)):
      (tmp_path / folder / str(seed)).mkdir(parents=True)
      _write_upstream_init(trainer, str(tmp_path / folder / str(seed) /
                                        'model.ckpt-0'), scale)

  def tool(folder):
    output = tmp_path / f'{folder}.json'
    proc = subprocess.run(
        [sys.executable, INITIAL_WEIGHTS, '--config', str(run), '--seeds',
         '1-3', '--upstream', str(tmp_path / folder / '*' / 'model.ckpt-0'),
         '--output', str(output)],
        capture_output=True, text=True, check=False, env=cli_env())
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    return proc, json.loads(output.read_text())

  proc, same = tool('same')
  assert proc.returncode == 0, proc.stdout
  assert same['flagged'] == [] and len(same['upstream']) == 3
  assert '0 variable(s) flagged' in proc.stdout
  # Batch-norm statistics start as the same constants on both sides.
  moving = [r for n, r in same['variables'].items() if 'moving_variance' in n]
  assert moving and all(r['std_t'] == 0 and r['mean_t'] == 0 for r in moving)
  proc, scaled = tool('scaled')
  assert proc.returncode == 1
  kernels = {n for n, r in scaled['variables'].items()
             if r['size'] >= 200 and n.endswith('/kernel')
             and 'dense' not in n}
  assert kernels and kernels <= set(scaled['flagged'])
  for name in kernels:
    row = scaled['variables'][name]
    assert row['std']['upstream'] / row['std']['port'] == pytest.approx(
        1.5, rel=0.2)
