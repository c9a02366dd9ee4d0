"""The augmentation spec: read from the config once, checked once, whole."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from automl_effnetv2 import augment_spec
from automl_effnetv2 import autoaugment
from automl_effnetv2 import hparams
from automl_effnetv2 import preprocessing
from automl_effnetv2 import run_config

AugmentSpec = augment_spec.AugmentSpec
SEED = tf.constant([3, 4], tf.int64)


def _config(extra=''):
  return run_config.build_config('efficientnetv2-b0', 'cifar10ft', extra)


def test_every_augmentation_key_of_the_config_reaches_the_spec():
  config = _config('data.augname=ft_autoaug_cutout,data.ra_num_layers=3,'
                   'data.ram=7.5,data.ra_ops=Rotate|Cutout,'
                   'data.translate_const=9,data.cutout_const=5,'
                   'data.aug_fill=0,data.solarize_wrap=false')
  spec = AugmentSpec.from_config(config.data)
  assert spec == AugmentSpec(policy='ft_autoaug_cutout', num_layers=3,
                             magnitude=7.5, ops=('Rotate', 'Cutout'),
                             translate_const=9, cutout_const=5, fill=0,
                             solarize_wrap=False)


def test_unset_keys_keep_upstreams_behaviour():
  # A run folder saved before the port's keys existed reads as upstream.
  data = _config().data.as_dict()
  for key in ('ra_ops', 'aug_fill', 'translate_const', 'cutout_const',
              'solarize_wrap'):
    del data[key]
  spec = AugmentSpec.from_config(hparams.Config(data))
  assert spec.ops == autoaugment.RANDAUGMENT_OPS
  assert spec.fill_color == autoaugment.REPLACE_GRAY
  assert spec.constants('randaug') == autoaugment.RANDAUGMENT_CONSTS
  assert spec.constants('autoaug') == autoaugment.AUTOAUGMENT_CONSTS
  assert spec.solarize_wrap is True


def test_constants_set_in_the_config_replace_both_policies_own():
  spec = AugmentSpec(translate_const=9)
  assert spec.constants('randaug') == (9, autoaugment.RANDAUGMENT_CONSTS[1])
  assert spec.constants('autoaug') == (9, autoaugment.AUTOAUGMENT_CONSTS[1])


def test_equal_settings_give_equal_specs():
  assert AugmentSpec(ops='Rotate') == AugmentSpec(ops=['Rotate'])
  assert AugmentSpec(ops=None) == AugmentSpec()
  assert AugmentSpec(policy='') == AugmentSpec(policy=None)
  # Repeats are kept: a name listed twice is drawn twice as often.
  assert AugmentSpec(ops=['Identity', 'Identity']).ops == ('Identity',) * 2
  assert len({AugmentSpec(), AugmentSpec(ops=None)}) == 1  # Hashable.


def test_a_stage_changes_the_magnitude_and_nothing_else():
  spec = AugmentSpec(policy='randaug', ops=['Rotate'], fill=0)
  staged = spec.at_magnitude(6.5)
  assert staged.magnitude == 6.5 and spec.magnitude == 15
  assert dataclasses.replace(staged, magnitude=15) == spec
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.magnitude = 3
  with pytest.raises(hparams.ConfigError, match=r'data\.ram=-1'):
    spec.at_magnitude(-1)


@pytest.mark.parametrize('policy, family, image_policies, cutout', [
    (None, 'default', (), False),
    ('randaug', 'default', ('randaug',), False),
    ('autoaug', 'default', ('autoaug',), False),
    ('ra_aa', 'default', ('ra_aa',), False),
    ('ft', 'finetune', (), True),
    ('ft_randaug', 'finetune', ('randaug',), False),
    ('ft_randaug_autoaug', 'finetune', ('autoaug', 'randaug'), False),
    ('ft_cutout', 'finetune', (), True),
    ('ft_autoaug_cutout', 'finetune', ('autoaug',), True),
    ('ft_flip', 'finetune', (), False),  # Any other part: flip only.
    ('effnetv1_autoaug', 'legacy', ('autoaug',), False),
    ('effnetv1_ra_aa', 'legacy', ('ra_aa',), False),
    ('effnetv1_', 'legacy', (), False),
])
def test_augnames_decode_as_upstreams_preprocessing_reads_them(
    policy, family, image_policies, cutout):
  spec = AugmentSpec(policy=policy)
  assert spec.family == family
  assert spec.image_policies == image_policies
  assert spec.finetune_cutout == cutout


@pytest.mark.parametrize('overrides, key', [
    (dict(policy='randaugment'), 'data.augname'),
    (dict(policy='effnetv1_rand'), 'data.augname'),
    (dict(policy=3), 'data.augname'),
    (dict(num_layers=-1), 'data.ra_num_layers'),
    (dict(num_layers=1.5), 'data.ra_num_layers'),
    (dict(num_layers=True), 'data.ra_num_layers'),
    (dict(magnitude=-0.5), 'data.ram'),
    (dict(magnitude=float('nan')), 'data.ram'),
    (dict(magnitude='high'), 'data.ram'),
    (dict(ops=[]), 'data.ra_ops'),
    (dict(ops=['Rotate', 'Spin']), 'data.ra_ops'),
    (dict(translate_const=-1), 'data.translate_const'),
    (dict(cutout_const='big'), 'data.cutout_const'),
    (dict(fill=256), 'data.aug_fill'),
    (dict(fill=-1), 'data.aug_fill'),
    (dict(fill=0.5), 'data.aug_fill'),
    (dict(fill='black'), 'data.aug_fill'),
    (dict(fill=True), 'data.aug_fill'),
    (dict(solarize_wrap='yes'), 'data.solarize_wrap'),
    (dict(enhance_pixels='PIL'), 'data.enhance_pixels'),
    (dict(enhance_pixels=None), 'data.enhance_pixels'),
])
def test_bad_values_are_refused_naming_their_key(overrides, key):
  with pytest.raises(hparams.ConfigError) as err:
    AugmentSpec(**overrides)
  message = str(err.value)
  assert key in message and '\n' not in message


def test_the_assembled_config_is_refused_in_one_line():
  with pytest.raises(hparams.ConfigError) as err:
    _config('data.ram=-2,data.ra_ops=Spin')
  assert 'data.ram=-2' in str(err.value)
  assert 'Spin' not in str(err.value)  # The first problem found is enough.
  with pytest.raises(hparams.ConfigError, match='did you mean Rotate'):
    _config('data.ra_ops=Rotat')


@pytest.mark.parametrize('fill, expected', [(None, 128), (0, 0), (255, 255)])
def test_fill_reaches_the_pixels_through_preprocessing(fill, expected):
  # A translation by 8 of a uniform 16 px image on the default path leaves
  # an 8 px band of fill, scaled to (fill - 128) / 128.
  image = tf.constant(np.full((16, 16, 3), 200, np.uint8))
  spec = AugmentSpec(policy='randaug', num_layers=1, magnitude=10,
                     ops=['TranslateX'], translate_const=8, fill=fill)
  out = preprocessing.preprocess_image(image, 16, True, seed=SEED,
                                       augment=spec).numpy()
  assert np.isclose(out, (expected - 128) / 128).sum() == 16 * 8 * 3


def test_the_magnitude_changes_the_images():
  image = tf.constant(np.tile(np.arange(0, 256, 16, dtype=np.uint8),
                              (16, 1))[..., None].repeat(3, -1))
  spec = AugmentSpec(policy='randaug', num_layers=1, ops=['Rotate'])
  low, high = [autoaugment.distort_image(image, 'randaug',
                                         spec.at_magnitude(m), SEED).numpy()
               for m in (1, 9)]
  assert not np.array_equal(low, high)
  np.testing.assert_array_equal(
      low, autoaugment.distort_image_with_randaugment(
          image, 1, 1, SEED, ops=['Rotate']).numpy())
