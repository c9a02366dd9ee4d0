"""Repository contracts: README commands, CI, configs/, the launcher script."""
import os
import re
import stat
import subprocess
import sys

import pytest

from automl_effnetv2 import main
from conftest import REPO


def _read(path):
  with open(os.path.join(REPO, path), encoding='utf-8') as f:
    return f.read()


def _setup_commands():
  readme = _read('README.md')
  section = readme.split('## Set-up (two commands)')[1].split('\n## ')[0]
  return re.findall(r'```\n(.*?)\n```', section, flags=re.S)


def test_readme_training_command_names_a_config_that_assembles():
  train_command = _setup_commands()[0]
  flags = dict(re.findall(r'--(\w+)=(\S+)', train_command.split('main.py')[1]))
  assert flags['mode'] in main.MODES
  model_name = flags.get('model_name', main.FLAGS['model_name'].default)
  config = main.build_config(model_name, flags['dataset_cfg'],
                             flags.get('hparam_str', ''))
  assert config.data.ds_name == 'fashion_mnist'  # Offline, no download.


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
  """Runs run_tpu_or_gpu.sh with main.py replaced by `echo`.

  The strategy choice runs for real; `nvidia-smi` is faked to list `gpus`.
  Returns the main.py command the script would run.
  """
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  smi = bin_dir / 'nvidia-smi'
  smi.write_text('#!/bin/sh\n' + ''.join(
      f'echo "GPU {i}: Fake (UUID: GPU-{i})"\n' for i in range(gpus)))
  smi.chmod(0o755)
  python = bin_dir / 'python'
  python.write_text(
      '#!/bin/sh\n'
      'if [ "$2" = automl_effnetv2.main ]; then echo "$@"; exit; fi\n'
      f'exec {sys.executable} "$@"\n')
  python.chmod(0o755)
  env = dict(os.environ, PYTHON=str(python),
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
  # A configured cluster wins over several local GPUs, as in the trainer.
  assert '--strategy=multi_worker_mirrored' in _launch(
      tmp_path, gpus=2, env_extra={'TF_CONFIG': '{}'})
  out = _launch(tmp_path, '--tpu=my-tpu')
  assert '--strategy=tpu' in out and out.count('--tpu=my-tpu') == 1
  assert '--tpu=v3' in _launch(tmp_path, env_extra={'TPU_NAME': 'v3'})
