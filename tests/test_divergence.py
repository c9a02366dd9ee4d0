"""Divergence: only sane checkpoints are saved, and a diverged run can go on."""
import math

import pytest
import tensorflow as tf

from automl_effnetv2 import divergence
from automl_effnetv2 import hparams
from automl_effnetv2 import main
from automl_effnetv2 import run_dir
from automl_effnetv2 import train_lib


def test_loss_watch_bound_is_four_times_the_chance_loss():
  watch = divergence.LossWatch(chance_loss=math.log(10))
  assert watch.bound == pytest.approx(4 * math.log(10))
  assert watch.observe(2.0, first_step=0)
  assert watch.observe(9.0, first_step=5)  # A bad spike, not an explosion.
  assert not watch.observe(50.0, first_step=10)  # Finite, yet exploding.
  assert not watch.observe(float('nan'), first_step=15)
  assert watch.exploding_since == 10  # Where it began, not where it ended.
  assert watch.observe(2.1, first_step=20)  # Back under the bound.


# Momentum SGD with the learning rate warming up over the whole run: sane for
# the first steps, then the rate grows until the loss explodes.
_DIVERGING = ('train.stages=0,train.epochs=0.01,train.lr_warmup_epoch=0.01,'
              'train.optimizer=momentum,data.mixup_alpha=0,'
              'data.cutmix_alpha=0')


def _one_device():
  return tf.distribute.OneDeviceStrategy('/cpu:0')


def test_diverged_run_resumes_from_its_last_good_checkpoint_with_a_lower_rate(
    tiny_config, tmp_path):
  model_dir = str(tmp_path / 'run')
  with pytest.raises(train_lib.TrainingError) as error:
    main.run('train', tiny_config(_DIVERGING + ',train.lr_base=1000'),
             model_dir, strategy=_one_device())
  last_good = tf.train.latest_checkpoint(model_dir)
  assert last_good, 'the run diverged before its first checkpoint'
  name = last_good.rsplit('/', 1)[-1]
  assert f'the last good checkpoint is {name}: rerun with --resume_from=' \
         f'{name}' in str(error.value)
  # Only checkpoints of a sane loss were saved: none holds a huge weight.
  reader = tf.train.load_checkpoint(last_good)
  for key in reader.get_variable_to_shape_map():
    if key.startswith('model/'):
      assert abs(reader.get_tensor(key)).max() < 1e3, key

  lower = tiny_config(_DIVERGING + ',train.lr_base=0.05')
  # Without --resume_from the changed rate is refused, with the way out.
  with pytest.raises(run_dir.RunDirError,
                     match=f'add --resume_from=<checkpoint>, e.g. '
                     f'--resume_from={name}'):
    main.run('train', lower, model_dir, strategy=_one_device())
  # --resume_from lets optimizer settings change, nothing else.
  with pytest.raises(run_dir.RunDirError, match=r'differs in data\.ram\)'):
    main.run('train', tiny_config(_DIVERGING + ',train.lr_base=0.05,'
                                  'data.ram=7'), model_dir,
             strategy=_one_device(), resume_from=name)

  trainer = train_lib.Trainer(lower, model_dir, strategy=_one_device())
  result = trainer.train(resume_from=name)
  step = int(name.split('-')[1])
  assert result['global_step'] == trainer.total_steps == 37
  assert trainer.history[0]['step'] > step  # Started at the checkpoint.
  assert all(math.isfinite(h['loss']) and h['loss'] < 10
             for h in trainer.history)
  saved = hparams.load_yaml(f'{model_dir}/config.yaml')
  assert saved['train']['lr_base'] == 0.05
  assert saved['runtime']['config_changes'] == [
      {'step': step, 'resumed_from': name,
       'changed': {'train.lr_base': [1000, 0.05]}, 'momentum_reset': True}]
  # From now on the plain command with the new rate resumes the run.
  again = main.run('train', lower, model_dir, strategy=_one_device())
  assert again['global_step'] == 37
  assert hparams.load_yaml(f'{model_dir}/config.yaml')['runtime'][
      'config_changes'] == saved['runtime']['config_changes']
