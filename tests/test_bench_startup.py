"""bench/startup_cost.py without training: its summary of the measured
processes and its flag checks."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'bench'))
import startup_cost  # noqa: E402  pylint: disable=g-import-not-at-top

STARTUP_COST = os.path.join(REPO, 'bench', 'startup_cost.py')


def _sample(**seconds):
  sample = dict.fromkeys(startup_cost.PHASES, 1.0)
  sample.update(seconds)
  return sample


def test_summary_takes_medians_per_phase_and_divides_them():
  samples = {
      'plain': [_sample(pipeline=2.0), _sample(pipeline=4.0),
                _sample(pipeline=3.0)],
      'autograph': [_sample(pipeline=9.0), _sample(pipeline=6.0),
                    _sample(pipeline=7.0, first_step=5.0)],
  }
  summary = startup_cost.summarize(samples)
  medians = summary['median_cpu_seconds']
  assert medians['plain']['pipeline'] == 3.0
  assert medians['autograph']['pipeline'] == 7.0
  assert medians['autograph']['first_step'] == 1.0  # One outlier of three.
  others = len(startup_cost.PHASES) - 1
  assert medians['plain']['total'] == pytest.approx(3.0 + others)
  assert medians['autograph']['total'] == pytest.approx(7.0 + others)
  ratios = summary['autograph_over_plain']
  assert ratios['pipeline'] == pytest.approx(7.0 / 3.0)
  assert ratios['imports'] == pytest.approx(1.0)
  assert ratios['total'] == pytest.approx((7.0 + others) / (3.0 + others))


@pytest.mark.parametrize('flags,message', [
    (['--repeats', '0'], '--repeats must be 1 or more'),
    (['--output', '/no/such/folder/x.json'],
     '--output /no/such/folder/x.json: its folder does not exist'),
])
def test_bad_flags_get_one_line_and_exit_2(flags, message):
  proc = subprocess.run([sys.executable, STARTUP_COST, *flags],
                        capture_output=True, text=True, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip() == f'startup_cost.py: error: {message}'


def test_a_wrong_override_is_refused_before_anything_is_measured(tmp_path):
  output = tmp_path / 'x.json'
  proc = subprocess.run(
      [sys.executable, STARTUP_COST, '--hparam_str', 'train.nosuchkey=1',
       '--output', str(output)],
      capture_output=True, text=True, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 2
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("startup_cost.py: error: --hparam_str: unknown "
                         "config key 'train.nosuchkey'")
  assert 'Traceback' not in proc.stderr and 'repeat' not in proc.stdout
  assert not output.exists()
