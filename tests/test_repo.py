"""Repository contracts: README commands, CI, configs/, the launcher script."""
import os
import re
import stat
import subprocess

import pytest

from automl_effnetv2 import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
  with open(os.path.join(REPO, path), encoding='utf-8') as f:
    return f.read()


def _setup_commands():
  readme = _read('README.md')
  section = readme.split('## Set-up (two commands)')[1].split('\n## ')[0]
  return re.findall(r'```\n(.*?)\n```', section, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
  commands = _setup_commands()
  assert len(commands) == 2
  main_job, tests = commands
  assert 'main.py --mode=train --dataset_cfg=fashion_mnist' in main_job
  assert 'pytest' in tests and 'venv' in tests
  assert all('\n' not in c for c in commands)  # One line each.


def test_ci_runs_the_readme_test_command_verbatim():
  ci = _read('.ci/run')
  assert _setup_commands()[1] in ci.splitlines()
  mode = os.stat(os.path.join(REPO, '.ci/run')).st_mode
  assert mode & stat.S_IXUSR


@pytest.mark.parametrize('mode', ['no_progressive', 'fixed_image_size',
                                  'fixed_regularization',
                                  'constant_weight_decay'])
def test_ablation_config_files_select_their_mode(mode):
  path = os.path.join(REPO, 'configs', f'ablation_{mode}.yaml')
  config = main.build_config('efficientnetv2-b0', 'fashion_mnist', path)
  assert config.train.ablation == mode


def test_study_config_file_keeps_stages_off_and_sets_a_checkpoint():
  path = os.path.join(REPO, 'configs', 'fashion_mnist_ft_study.yaml')
  config = main.build_config('efficientnetv2-b0', 'FashionMNISTFt', path)
  assert config.train.stages == 0
  # Keras' B0 ImageNet weights, where keras.applications caches them.
  assert config.train.ft_init_ckpt == '~/.keras/models/efficientnetv2-b0.h5'
  assert config.data.ds_name == 'fashion_mnist'


def _launch(tmp_path, *args, env_extra=None, gpus=0):
  """Runs run_tpu_or_gpu.sh with `echo` as Python; returns the command."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  smi = bin_dir / 'nvidia-smi'
  smi.write_text('#!/bin/sh\n' + ''.join(
      f'echo "GPU {i}: Fake (UUID: GPU-{i})"\n' for i in range(gpus)))
  smi.chmod(0o755)
  env = dict(os.environ, PYTHON='echo',
             PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  env.pop('TF_CONFIG', None)
  env.pop('TPU_NAME', None)
  env.update(env_extra or {})
  result = subprocess.run(['bash', os.path.join(REPO, 'run_tpu_or_gpu.sh'),
                           *args], env=env, capture_output=True, text=True,
                          check=True)
  return result.stdout.strip()


def test_launcher_picks_the_strategy(tmp_path):
  assert '--strategy=one_device --mode=train' in _launch(tmp_path,
                                                          '--mode=train')
  assert '--strategy=mirrored' in _launch(tmp_path, gpus=2)
  assert '--strategy=one_device' in _launch(tmp_path, gpus=1)
  assert '--strategy=multi_worker_mirrored' in _launch(
      tmp_path, env_extra={'TF_CONFIG': '{}'})
  out = _launch(tmp_path, '--tpu=my-tpu')
  assert '--strategy=tpu' in out and out.count('--tpu=my-tpu') == 1
  assert '--tpu=v3' in _launch(tmp_path, env_extra={'TPU_NAME': 'v3'})
