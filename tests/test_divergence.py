"""Divergence: only sane checkpoints are saved, and a diverged run can go on."""
import math
import shlex
import subprocess

import pytest
import tensorflow as tf

from conftest import cli_env, main_command, one_device
from automl_effnetv2 import divergence
from automl_effnetv2 import hparams
from automl_effnetv2 import main
from automl_effnetv2 import run_dir
from automl_effnetv2 import train_errors
from automl_effnetv2 import train_lib


def test_loss_watch_bound_is_four_times_the_chance_loss():
  watch = divergence.LossWatch(chance_loss=math.log(10), patience=2)
  assert watch.bound == pytest.approx(4 * math.log(10))
  assert watch.observe(2.0, first_step=0)
  assert watch.observe(9.0, first_step=5)  # A bad spike, not an explosion.
  assert not watch.observe(50.0, first_step=10)  # Finite, yet exploding.
  assert not watch.gave_up  # It may come back...
  assert watch.observe(2.1, first_step=15)  # ... and here it does.
  assert not watch.observe(50.0, first_step=20)
  assert not watch.observe(60.0, first_step=25)
  assert watch.gave_up  # Out of bounds for `patience` intervals in a row.
  assert watch.exploding_since == 20  # Where it began, not where it ended.
  assert not watch.observe(float('nan'), first_step=30) and watch.gave_up
  fresh = divergence.LossWatch(chance_loss=math.log(10))
  assert not fresh.observe(float('nan')) and fresh.gave_up  # At once.


def test_the_suggested_rate_is_never_above_the_default():
  assert divergence.safer_lr_base(1e9) == hparams.base_config.train.lr_base
  assert divergence.safer_lr_base(0.02) == 0.005


# Momentum SGD with the learning rate warming up over the whole run: sane for
# the first steps, then the rate grows until the loss explodes.
_DIVERGING = ('train.stages=0,train.epochs=0.01,train.lr_warmup_epoch=0.01,'
              'train.optimizer=momentum,data.mixup_alpha=0,'
              'data.cutmix_alpha=0')


def _largest_weight(checkpoint):
  reader = tf.train.load_checkpoint(checkpoint)
  return max(abs(reader.get_tensor(key)).max()
             for key in reader.get_variable_to_shape_map()
             if key.startswith('model/'))


def test_a_checkpoint_is_judged_by_its_weights_not_the_loss_before_them(
    tiny_config, tmp_path):
  # At this rate the loss logged for step 2 is still sane (computed before
  # step 2's update), while the update makes the weights huge.
  model_dir = str(tmp_path / 'run')
  config = tiny_config('train.stages=0,train.lr_base=1e9,'
                       'train.lr_warmup_epoch=0.01,'
                       'runtime.log_step_count_steps=1,'
                       'runtime.save_checkpoints_steps=1')
  trainer = train_lib.Trainer(config, model_dir, strategy=one_device())
  with pytest.raises(train_errors.Diverged) as error:
    trainer.train()
  kept = run_dir.RunDir(model_dir).checkpoints()
  assert kept, 'no checkpoint at all: the first step was already bad'
  assert error.value.resume_from == kept[-1].rsplit('/', 1)[-1]
  for checkpoint in kept:
    assert _largest_weight(checkpoint) < 1e3, checkpoint
  # Stopped soon after the loss left the bound, not at the stage's end.
  assert trainer.history[-1]['step'] < trainer.plan.total_steps


def test_the_printed_advice_followed_literally_finishes(
    fashion_mnist_tfds_dir, tmp_path):
  model_dir = str(tmp_path / 'run')
  first = subprocess.run(
      main_command(fashion_mnist_tfds_dir, '--mode=train',
                   f'--model_dir={model_dir}',
                   extra=',' + _DIVERGING + ',train.lr_base=1000'),
      env=cli_env(), cwd=tmp_path, capture_output=True, text=True,
      check=False, timeout=600)
  assert first.returncode == 1, first.stderr[-3000:]
  assert 'Traceback' not in first.stderr
  errors = [line for line in first.stderr.splitlines()
            if line.startswith('error:')]
  assert len(errors) == 1, first.stderr[-3000:]
  assert 'the last good checkpoint is ckpt-' in errors[0]
  command = errors[0].split('; to go on, run: ', 1)[1]
  for checkpoint in run_dir.RunDir(model_dir).checkpoints():
    assert _largest_weight(checkpoint) < 1e3, checkpoint

  again = subprocess.run(shlex.split(command), env=cli_env(), cwd=tmp_path,
                         capture_output=True, text=True, check=False,
                         timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'resuming from ckpt-' in again.stdout
  assert "'global_step': 37" in again.stdout.split('final:')[1]


def test_diverged_run_resumes_from_its_last_good_checkpoint_with_a_lower_rate(
    tiny_config, tmp_path):
  model_dir = str(tmp_path / 'run')
  with pytest.raises(train_errors.TrainingError) as error:
    main.run('train', tiny_config(_DIVERGING + ',train.lr_base=1000'),
             model_dir, strategy=one_device())
  last_good = tf.train.latest_checkpoint(model_dir)
  assert last_good, 'the run diverged before its first checkpoint'
  name = last_good.rsplit('/', 1)[-1]
  assert f'the last good checkpoint is {name}: go on from it with ' \
         f'--resume_from={name}' in str(error.value)

  lower = tiny_config(_DIVERGING + ',train.lr_base=0.05')
  # Without --resume_from the changed rate is refused, with the way out.
  with pytest.raises(run_dir.RunDirError,
                     match=f'add --resume_from=<checkpoint>, e.g. '
                     f'--resume_from={name}'):
    main.run('train', lower, model_dir, strategy=one_device())
  # --resume_from lets optimizer settings change, nothing else.
  with pytest.raises(run_dir.RunDirError, match=r'differs in data\.ram\)'):
    main.run('train', tiny_config(_DIVERGING + ',train.lr_base=0.05,'
                                  'data.ram=7'), model_dir,
             strategy=one_device(), resume_from=name)

  trainer = train_lib.Trainer(lower, model_dir, strategy=one_device())
  result = trainer.train(resume_from=name)
  step = int(name.split('-')[1])
  assert result['global_step'] == trainer.plan.total_steps == 37
  assert trainer.history[0]['step'] > step  # Started at the checkpoint.
  assert all(math.isfinite(h['loss']) and h['loss'] < 10
             for h in trainer.history)
  saved = hparams.load_yaml(f'{model_dir}/config.yaml')
  assert saved['train']['lr_base'] == 0.05
  assert saved['runtime']['config_changes'] == [
      {'step': step, 'resumed_from': name,
       'changed': {'train.lr_base': [1000, 0.05]}, 'momentum_reset': True}]
  # From now on the plain command with the new rate resumes the run.
  again = main.run('train', lower, model_dir, strategy=one_device())
  assert again['global_step'] == 37
  assert hparams.load_yaml(f'{model_dir}/config.yaml')['runtime'][
      'config_changes'] == saved['runtime']['config_changes']
