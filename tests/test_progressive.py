"""Stage schedule formulas, checked against hand-computed upstream values."""
import copy

import numpy as np
import pytest

from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import hparams
from automl_effnetv2 import progressive
from automl_effnetv2 import run_config


def _v2_s_config():
  config = copy.deepcopy(hparams.base_config)
  config.override(effnetv2_configs.get_model_config('efficientnetv2-s'))
  return config


def test_v2_s_stage_sizes_are_upstreams():
  config = _v2_s_config()
  stages = progressive.stage_schedule(config, total_steps=1000, train_size=300)
  assert [s.image_size for s in stages] == [171, 214, 257, 300]
  assert [s.max_steps for s in stages] == [250, 500, 750, 1000]


def test_adaptive_regularization_is_linspace():
  config = _v2_s_config()
  config.override('data.ram=15,data.mixup_alpha=0.2,data.cutmix_alpha=0.4')
  stages = progressive.stage_schedule(config, 400, 300)
  np.testing.assert_allclose([s.ram for s in stages], [5, 25 / 3, 35 / 3, 15])
  np.testing.assert_allclose([s.mixup_alpha for s in stages],
                             [0, 0.2 / 3, 0.4 / 3, 0.2])
  np.testing.assert_allclose([s.cutmix_alpha for s in stages],
                             [0, 0.4 / 3, 0.8 / 3, 0.4])


def test_dropout_is_not_scheduled_by_default_as_upstream():
  stages = progressive.stage_schedule(_v2_s_config(), 400, 300)
  assert [s.dropout_rate for s in stages] == [0.2] * 4


def test_paper_dropout_schedule_behind_a_key():
  config = _v2_s_config()
  config.override('train.sched_dropout=true')
  stages = progressive.stage_schedule(config, 400, 300)
  np.testing.assert_allclose([s.dropout_rate for s in stages],
                             [0, 0.2 / 3, 0.4 / 3, 0.2])


def test_without_sched_regularization_stays_at_config_values():
  config = _v2_s_config()
  config.override('train.sched=false,data.mixup_alpha=0.3')
  stages = progressive.stage_schedule(config, 400, 300)
  assert [s.ram for s in stages] == [10] * 4
  assert [s.mixup_alpha for s in stages] == [0.3] * 4
  assert [s.image_size for s in stages] == [171, 214, 257, 300]


def test_zero_stages_is_one_stage_at_full_size():
  config = _v2_s_config()
  config.override('train.stages=0')
  stages = progressive.stage_schedule(config, 123, 300)
  assert len(stages) == 1
  assert (stages[0].max_steps, stages[0].image_size) == (123, 300)


def test_ibase_none_starts_at_half_the_size():
  config = _v2_s_config()
  config.override('data.ibase=None,train.stages=2')
  stages = progressive.stage_schedule(config, 10, 300)
  assert [s.image_size for s in stages] == [225, 300]


def test_train_steps_and_ratio_sizes():
  assert progressive.train_steps(350, 1_256_144, 4096) == 107_336
  assert progressive.train_steps(15, 50_000, 512, min_steps=10_000) == 10_000
  assert progressive.train_image_size(0.8, 224) == 176  # int(179.2)//16*16
  assert progressive.train_image_size(1.0, 224) == 224
  assert progressive.train_image_size(300, 384) == 300


@pytest.mark.parametrize('step,index', [(0, 0), (249, 0), (250, 1), (999, 3)])
def test_stage_at_step(step, index):
  stages = progressive.stage_schedule(_v2_s_config(), 1000, 300)
  assert progressive.stage_at_step(stages, step).index == index
  assert progressive.stage_at_step(stages, 1000) is None


def _imagenet_v2_s(hparam_str='train.batch_size=4096'):
  return run_config.build_config('efficientnetv2-s', 'imagenet', hparam_str)


def test_run_plan_reads_length_sizes_and_stages_from_the_config():
  # Upstream's ImageNet numbers: 350 epochs of 1,256,144 images in batches
  # of 4096 are 107,336 steps; V2-S trains at 300 px and evaluates at 384.
  config = _imagenet_v2_s()
  assert config.train.epochs == 350
  plan = progressive.run_plan(config)
  assert plan.total_steps == 107_336
  assert plan.steps_per_epoch == 1_256_144 / 4096
  assert (plan.train_size, plan.eval_size) == (300, 384)
  assert [s.image_size for s in plan.stages] == [171, 214, 257, 300]
  assert [s.max_steps for s in plan.stages] == [26_834, 53_668, 80_502,
                                                107_336]
  assert [s.index for s in plan.stages] == [0, 1, 2, 3]
  assert plan.stage_at_step(26_834).index == 1
  assert plan.stage_at_step(107_336) is None


def test_run_plan_stretched_over_another_length_keeps_its_stage_settings():
  config = _imagenet_v2_s()
  plan = progressive.run_plan(config, total_steps=1000)
  assert plan.total_steps == 1000
  assert [s.max_steps for s in plan.stages] == [250, 500, 750, 1000]
  assert plan.stages == tuple(progressive.stage_schedule(config, 1000, 300))


def test_stage_settings_carry_augmentation_at_the_stage_magnitude():
  config = _imagenet_v2_s()
  config.override('data.augname=randaug,data.ram=15,data.ra_num_layers=3')
  stages = progressive.run_plan(config, 400).stages
  assert [s.augment.magnitude for s in stages] == [s.ram for s in stages]
  np.testing.assert_allclose([s.ram for s in stages], [5, 25 / 3, 35 / 3, 15])
  # Only the magnitude changes from stage to stage.
  assert {(s.augment.policy, s.augment.num_layers) for s in stages} == {
      ('randaug', 3)}
  assert isinstance(stages[0], progressive.StageSettings)
