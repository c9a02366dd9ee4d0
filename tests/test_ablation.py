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


@pytest.mark.parametrize('mode,knobs', [
    ('none', SCHEDULED),
    ('no_progressive', dict(HELD, steps=SCHEDULED['steps'])),
    ('fixed_image_size', dict(SCHEDULED, size=HELD['size'])),
    ('fixed_regularization', dict(HELD, size=SCHEDULED['size'],
                                  steps=SCHEDULED['steps'])),
    ('constant_weight_decay', SCHEDULED),
])
def test_run_plan_applies_the_configs_ablation(mode, knobs):
  config = _stages(mode)[0]  # The mode recorded in train.ablation.
  config.override('data.splits.train.num_images=128000')
  plan = progressive.run_plan(config, total_steps=1000)
  assert plan.steps_per_epoch == 128000 / config.train.batch_size
  assert plan.stages == tuple(_stages(mode)[1])
  _assert_knobs(plan.stages, **knobs)


@pytest.mark.parametrize('mode', progressive.ABLATIONS)
def test_config_checks_study_clocks_and_runner_read_one_plan(mode):
  from automl_effnetv2.study import clocks  # pylint: disable=g-import-not-at-top
  from automl_effnetv2.study import runner  # pylint: disable=g-import-not-at-top
  config = main.build_config('efficientnetv2-b0', 'fashion_mnist',
                             ablation=mode)
  plan = progressive.run_plan(config)
  num_images = config.data.splits.train.num_images
  assert plan.total_steps == progressive.train_steps(
      config.train.epochs, num_images, config.train.batch_size)
  # The study's clocks count the plan's steps per size, every step once.
  counts = clocks.steps_per_size(plan.stages, plan.total_steps)
  assert sum(counts.values()) == plan.total_steps
  assert set(counts) == {s.image_size for s in plan.stages}
  # The runner's signature is the plan with equal neighbours merged.
  settings = [(s.image_size, s.ram, s.mixup_alpha, s.cutmix_alpha,
               s.dropout_rate) for s in plan.stages]
  ends = [s.max_steps for s in plan.stages]
  kept = [i for i in range(len(settings))
          if i + 1 == len(settings) or settings[i] != settings[i + 1]]
  assert runner.effective_schedule(config) == tuple(
      (ends[i],) + settings[i] for i in kept)
  # The config checks refuse exactly the plans with a stage below 16 px.
  small = copy.deepcopy(config)
  small.override('data.ibase=8')
  smallest = min(s.image_size for s in progressive.run_plan(small).stages)
  try:
    main.build_config('efficientnetv2-b0', 'fashion_mnist', 'data.ibase=8',
                      ablation=mode)
    refused = False
  except hparams.ConfigError as e:
    assert f'training images of {smallest} px' in str(e)
    refused = True
  assert refused == (smallest < 16)
