"""tf_import.quietly (and bench_cli.quiet_tensorflow_import, which defaults
the level to 2): what TensorFlow's C side writes to stderr while it loads
stays off the terminal when TF_CPP_MIN_LOG_LEVEL hides anything. A stand-in
`tensorflow` package on PYTHONPATH writes to file descriptor 2 directly, as
TensorFlow's absl notice does."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = ("import sys; sys.path.insert(0, {bench!r}); import bench_cli; "
          "bench_cli.quiet_tensorflow_import(); "
          "print('after', file=sys.stderr, flush=True)")
PACKAGE_SCRIPT = ("import sys; sys.path.insert(0, {repo!r}); "
                  "from automl_effnetv2 import tf_import; tf_import.quietly(); "
                  "print('after', file=sys.stderr, flush=True)")


def _run(tmp_path, body, level, script=SCRIPT):
  package = tmp_path / 'tensorflow'
  package.mkdir(exist_ok=True)
  (package / '__init__.py').write_text(body)
  env = dict(os.environ, PYTHONPATH=str(tmp_path))
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  if level is not None:
    env['TF_CPP_MIN_LOG_LEVEL'] = level
  return subprocess.run(
      [sys.executable, '-c',
       script.format(bench=os.path.join(REPO, 'bench'), repo=REPO)],
      capture_output=True, text=True, env=env, check=False)


NOTICE = "import os; os.write(2, b'notice from the C side\\n')\n"


@pytest.mark.parametrize('level', [None, '2', '3'])
def test_notices_while_loading_stay_off_stderr(tmp_path, level):
  proc = _run(tmp_path, NOTICE, level)
  assert proc.returncode == 0, proc.stderr
  # stderr works again once the import is done.
  assert proc.stderr == 'after\n'


def test_level_zero_shows_them(tmp_path):
  proc = _run(tmp_path, NOTICE, '0')
  assert proc.stderr == 'notice from the C side\nafter\n'


def test_a_failing_import_still_shows_its_error(tmp_path):
  proc = _run(tmp_path, NOTICE + "raise ImportError('no such library')\n",
              '2')
  assert proc.returncode == 1
  assert 'ImportError: no such library' in proc.stderr
  assert 'notice from the C side' not in proc.stderr


def test_the_package_keeps_the_notices_when_no_level_is_set(tmp_path):
  # The training CLI sets no level of its own: TensorFlow's default shows.
  proc = _run(tmp_path, NOTICE, None, PACKAGE_SCRIPT)
  assert proc.stderr == 'notice from the C side\nafter\n'
  proc = _run(tmp_path, NOTICE, '2', PACKAGE_SCRIPT)
  assert proc.stderr == 'after\n'


def test_the_training_cli_refuses_in_one_line_with_tensorflow_quiet():
  proc = subprocess.run(
      [sys.executable, '-m', 'automl_effnetv2.main', '--mode=bogus'],
      capture_output=True, text=True, check=False, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2'))
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: flag --mode=bogus: value should be one of '
      '<train|eval|traineval|export> (see --help)']
