"""Ablation modes change exactly the knobs they name."""
import copy
import json

import numpy as np
import pytest
import yaml

from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import hparams
from automl_effnetv2 import main
from automl_effnetv2 import progressive



def _stages(mode, inc=0.5):
  config = copy.deepcopy(hparams.base_config)
  config.override(effnetv2_configs.get_model_config('efficientnetv2-m'))
  config.override(f'train.sched_dropout=true,train.weight_decay_inc={inc}')
  progressive.ablate_config(config, mode)
  stages = progressive.stage_schedule(config, 1000, 384)
  return config, progressive.apply_ablation(stages, mode)


def _knobs(stages):
  return dict(
      size=[s.image_size for s in stages], ram=[s.ram for s in stages],
      mixup=[s.mixup_alpha for s in stages],
      cutmix=[s.cutmix_alpha for s in stages],
      dropout=[s.dropout_rate for s in stages],
      steps=[s.max_steps for s in stages])


SCHEDULED = dict(size=[192, 256, 320, 384],
                 ram=list(np.linspace(5, 15, 4)),
                 mixup=list(np.linspace(0, 0.2, 4)),
                 cutmix=list(np.linspace(0, 0.2, 4)),
                 dropout=list(np.linspace(0, 0.3, 4)),
                 steps=[250, 500, 750, 1000])
HELD = dict(size=[384] * 4, ram=[15] * 4, mixup=[0.2] * 4, cutmix=[0.2] * 4,
            dropout=[0.3] * 4)


def _assert_knobs(stages, **expected):
  knobs = _knobs(stages)
  for name, values in expected.items():
    np.testing.assert_allclose(knobs[name], values, err_msg=name)


def test_none_keeps_upstreams_schedule():
  _assert_knobs(_stages('none')[1], **SCHEDULED)


def test_no_progressive_holds_size_and_regularization_at_final_values():
  _assert_knobs(_stages('no_progressive')[1], steps=SCHEDULED['steps'],
                **HELD)


def test_fixed_image_size_holds_only_the_size():
  knobs = dict(SCHEDULED, size=HELD['size'])
  _assert_knobs(_stages('fixed_image_size')[1], **knobs)


def test_fixed_regularization_holds_only_regularization():
  knobs = dict(HELD, size=SCHEDULED['size'], steps=SCHEDULED['steps'])
  _assert_knobs(_stages('fixed_regularization')[1], **knobs)


def test_constant_weight_decay_zeroes_only_the_ramp():
  config, stages = _stages('constant_weight_decay')
  _assert_knobs(stages, **SCHEDULED)
  unablated = _stages('none')[0]
  assert config.train.weight_decay_inc == 0.0
  assert unablated.train.weight_decay_inc == 0.5
  # The L2 factor itself stays (the study's edit set it to 1.0).
  assert config.train.weight_decay == unablated.train.weight_decay


def test_unknown_mode_lists_the_valid_ones():
  with pytest.raises(ValueError, match='no_progressive'):
    progressive.check_ablation('no_progresive')
  with pytest.raises(ValueError, match='fixed_image_size'):
    main.build_config('efficientnetv2-b0', 'fashion_mnist',
                      ablation='fixed_size')


def test_flag_wins_over_config_and_is_recorded():
  config = main.build_config('efficientnetv2-b0', 'fashion_mnist',
                             'train.ablation=fixed_image_size',
                             ablation='no_progressive')
  assert config.train.ablation == 'no_progressive'
  config = main.build_config('efficientnetv2-b0', 'fashion_mnist',
                             'train.ablation=fixed_image_size')
  assert config.train.ablation == 'fixed_image_size'


def test_a_run_trains_and_records_its_mode(tiny_config, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  config = tiny_config('train.stages=2')
  progressive.ablate_config(config, 'no_progressive')
  main.run('traineval', config, str(tmp_path),
           strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
  saved = yaml.safe_load((tmp_path / 'config.yaml').read_text())
  assert saved['train']['ablation'] == 'no_progressive'
  metrics = json.loads((tmp_path / 'metrics.json').read_text())
  assert metrics['ablation'] == 'no_progressive'
  assert [e['stage'] for e in metrics['evals']] == [1, 2]
