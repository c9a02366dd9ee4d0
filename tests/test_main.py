"""main.py as users run it: the plain command, checked values, short errors."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, TF_NATIVE_LOG, TINY_HPARAMS, cli_env
from automl_effnetv2 import config_checks
from automl_effnetv2 import hparams
from automl_effnetv2 import main
from automl_effnetv2 import run_dir


def _build(hparam_str, dataset_cfg='fashion_mnist'):
  return main.build_config('efficientnetv2-b0', dataset_cfg, hparam_str)


# -- values are checked where the config is assembled ----------------------------
@pytest.mark.parametrize('hparam_str, message', [
    ('train.batch_size=-5',
     'train.batch_size=-5 is out of range: expected an integer >= 1'),
    ('train.batch_size=2.5',
     'train.batch_size=2.5 is out of range: expected an integer >= 1'),
    ('train.epochs=0', 'train.epochs=0 with train.min_steps=0 and '
     'train.batch_size=128 gives 0 training steps on 60000 images; expected '
     '>= 1 step (raise train.epochs or train.min_steps)'),
    ('train.lr_base=1e999', 'train.lr_base=inf is not a finite number'),
    ('train.weight_decay=-1e-5',
     'train.weight_decay=-1e-05 is out of range: expected a number >= 0'),
    ('train.label_smoothing=1.5',
     'train.label_smoothing=1.5 is out of range: expected in [0, 1]'),
    ('model.survival_prob=0',
     'model.survival_prob=0 is out of range: expected in (0, 1]'),
    ('eval.isize=8', "eval.isize=8 is below the model's minimum image size: "
     'expected >= 16'),
    ('train.isize=0.1', 'train.isize=0.1 with eval.isize=64 and data.ibase=40 '
     'gives training images of 0 px; expected >= 16'),
])
def test_out_of_range_values_are_refused_naming_key_value_and_range(
    hparam_str, message):
  with pytest.raises(hparams.ConfigError) as error:
    _build(hparam_str)
  assert str(error.value).startswith(message), str(error.value)


# Every key that selects one of a few named choices.
_NAMED_CHOICES = ['train.optimizer', 'train.lr_sched', 'train.loss_type',
                  'train.split', 'eval.split', 'model.act_fn', 'model.bn_type',
                  'model.data_format', 'data.ds_name', 'data.augname',
                  'runtime.mixed_precision', 'runtime.strategy']


@pytest.mark.parametrize('key', _NAMED_CHOICES)
def test_unknown_names_are_refused_listing_only_accepted_ones(key):
  with pytest.raises(hparams.ConfigError) as error:
    _build(f'{key}=bogus')
  message = str(error.value)
  assert message.startswith('unknown ') and f" {key} 'bogus'" in message
  assert ';' not in message.replace('; did you mean', '')  # One problem.
  listed = message.split('(valid: ')[1].rstrip(')').split(', ')
  for name in listed:  # Each name offered is one the key takes.
    _build(f'{key}={name}')
  if key == 'runtime.strategy':  # And --strategy takes it too.
    assert set(listed) <= set(main.FLAGS['strategy'].parser.enum_values)


def test_a_close_name_is_suggested():
  with pytest.raises(hparams.ConfigError,
                     match="unknown train.optimizer 'rmsprp'; did you mean "
                     'rmsprop?'):
    _build('train.optimizer=rmsprp')


def test_block_strings_with_an_unknown_conv_type_are_refused():
  with pytest.raises(hparams.ConfigError,
                     match=r"^model\.blocks_args: block string "
                     "'r1_k3_s1_e1_i32_o16_c7': c must be 0 or 1"):
    _build('model.blocks_args=r1_k3_s1_e1_i32_o16_c0|r1_k3_s1_e1_i32_o16_c7')


def test_every_problem_is_in_the_one_line():
  with pytest.raises(hparams.ConfigError) as error:
    _build('train.batch_size=0,model.dropout_rate=1.0')
  assert str(error.value) == (
      'train.batch_size=0 is out of range: expected an integer >= 1; '
      'model.dropout_rate=1.0 is out of range: expected in [0, 1)')


def test_sensible_edge_values_pass():
  # Zero epochs with a step floor, 16 px, no smoothing, EMA off.
  config = _build('train.epochs=0,train.min_steps=3,eval.isize=16,'
                  'train.isize=16,data.ibase=16,train.label_smoothing=0,'
                  'train.ema_decay=0,train.gclip=0')
  config_checks.validate(config)
  assert config.train.min_steps == 3


# -- command-line errors are one line ------------------------------------------
@pytest.mark.parametrize('flags, expected', [
    (['--dataset_cfg=fashionmnist'], "unknown name 'fashionmnist'"),
    (['--dataset_cfg=fashion_mnist', '--hparam_str=train.batch_size=-5'],
     'train.batch_size=-5 is out of range'),
    (['--dataset_cfg=fashion_mnist', '--hparam_str=runtime.strategy=bogus'],
     "unknown runtime.strategy 'bogus'"),
    # Names once noticed only after model_dir was made, or not at all.
    (['--dataset_cfg=fashion_mnist', '--hparam_str=train.lr_sched=bogus'],
     "unknown train.lr_sched 'bogus' (valid: exponential, cosine"),
    (['--dataset_cfg=fashion_mnist', '--hparam_str=train.loss_type=bogus'],
     "unknown train.loss_type 'bogus' (valid: None, softmax"),
    (['--dataset_cfg=fashion_mnist', '--mode=eval', '--resume_from=ckpt-5'],
     '--resume_from is for --mode=train'),
    # Flags absl refuses are usage errors too, with the same status.
    (['--dataset_cfg=fashion_mnist', '--mode=bogus'],
     'flag --mode=bogus: value should be one of'),
    (['--dataset_cfg=fashion_mnist', '--strategy=gpus'],
     'flag --strategy=gpus: value should be one of'),
    (['--dataset_cfg=fashion_mnist', '--no_such_flag=1'],
     "Unknown command line flag 'no_such_flag'"),
])
def test_usage_errors_are_one_line_and_write_nothing(tmp_path, flags,
                                                     expected):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'automl_effnetv2', 'main.py'),
       *flags], env=cli_env(), cwd=tmp_path, capture_output=True, text=True,
      check=False)
  assert result.returncode == 2
  lines = [line for line in result.stderr.splitlines()
           if line.strip() and not TF_NATIVE_LOG.match(line)]
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('error: ') and expected in lines[0]
  assert lines[0].endswith('(see --help)')
  assert os.listdir(tmp_path) == []


# -- the plain command -----------------------------------------------------------
def test_default_model_dir_names_model_dataset_and_ablation():
  assert main.default_model_dir('efficientnetv2-b0', 'fashion_mnist') == (
      os.path.join('runs', 'efficientnetv2-b0_fashion_mnist'))
  assert main.default_model_dir('efficientnetv2-s', 'Cifar10Ft', 'none') == (
      os.path.join('runs', 'efficientnetv2-s_cifar10ft'))
  assert main.default_model_dir('efficientnetv2-b0', 'fashion_mnist',
                                'no_progressive') == os.path.join(
                                    'runs',
                                    'efficientnetv2-b0_fashion_mnist_'
                                    'no_progressive')


def test_the_users_command_trains_without_model_dir_and_resumes(
    fashion_mnist_tfds_dir, tmp_path):
  # The command as users write it, made tiny by --hparam_str only.
  tiny = (TINY_HPARAMS + f',data.tfds_data_dir={fashion_mnist_tfds_dir},'
          'train.stages=0,train.epochs=0.002')
  command = [sys.executable, os.path.join(REPO, 'automl_effnetv2', 'main.py'),
             '--mode=train', '--dataset_cfg=fashion_mnist',
             f'--hparam_str={tiny}']
  folder = tmp_path / 'runs' / 'efficientnetv2-b0_fashion_mnist'
  first = subprocess.run(command, env=cli_env(), cwd=tmp_path,
                         capture_output=True, text=True, check=False)
  assert first.returncode == 0, first.stderr[-3000:]
  assert first.stdout.startswith(
      'model_dir: runs/efficientnetv2-b0_fashion_mnist (default; '
      '--model_dir to change)')
  assert (folder / 'ckpt-7.index').exists()
  assert (folder / 'export' / 'ema.weights.h5').exists()
  again = subprocess.run(command, env=cli_env(), cwd=tmp_path,
                         capture_output=True, text=True, check=True)
  assert 'steps 0->' not in again.stdout  # Resumed: nothing left to train.
  evals = json.loads((folder / 'metrics.json').read_text())['evals']
  assert [e['global_step'] for e in evals] == [7, 7]
  ablation = subprocess.run(command + ['--ablation=fixed_image_size'],
                            env=cli_env(), cwd=tmp_path, capture_output=True,
                            text=True, check=True)
  assert 'steps 0->7' in ablation.stdout
  assert sorted(os.listdir(tmp_path / 'runs')) == [
      'efficientnetv2-b0_fashion_mnist',
      'efficientnetv2-b0_fashion_mnist_fixed_image_size']
  assert run_dir.read_metrics(
      str(tmp_path / 'runs' / 'efficientnetv2-b0_fashion_mnist_'
          'fixed_image_size'))['ablation'] == 'fixed_image_size'
