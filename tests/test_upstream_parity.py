"""Upstream's own unit tests, asserted against this port.

Upstream is google/automl `efficientnetv2/` at a6bb1ff; its tests are the
`*_test.py` files there (docs/upstream.md lists them). Each test below names
the upstream test it mirrors: the numbers it checks are upstream's, the code
is this project's. Where upstream's test cannot apply here, one line says
why. The tests after those pin the places where this port once differed
from upstream (docs/deviations.md).
"""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from automl_effnetv2 import augment_spec
from automl_effnetv2 import autoaugment
from automl_effnetv2 import datasets
from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import hparams
from automl_effnetv2 import main
from automl_effnetv2 import preprocessing
from automl_effnetv2 import progressive
from automl_effnetv2 import run_dir
from automl_effnetv2 import train_lib
from automl_effnetv2 import utils
from conftest import REPO


SEED = tf.constant([3, 4], tf.int32)


# -- effnetv2_model_test.py --------------------------------------------------
# Upstream's EffNetV2ModelTest.test_effnetv1 / test_effnetv2: parameter counts
# of the 1000-class models. Upstream calls the subclassed model once to build
# it; the functional model here is built on construction.
UPSTREAM_PARAM_COUNTS = {
    'efficientnet-b0': 5_330_564,
    'efficientnet-b1': 7_856_232,
    'efficientnet-b2': 9_177_562,
    'efficientnet-b3': 12_314_268,
    'efficientnet-b4': 19_466_816,
    'efficientnet-b5': 30_562_520,
    'efficientnet-b6': 43_265_136,
    'efficientnetv2-b0': 7_200_312,
    'efficientnetv2-b1': 8_212_124,
    'efficientnetv2-b2': 10_178_374,
    'efficientnetv2-b3': 14_467_622,
    'efficientnetv2-s': 21_612_360,
    'efficientnetv2-m': 54_431_388,
    'efficientnetv2-l': 119_027_848,
    'efficientnetv2-xl': 208_896_832,
}


@pytest.mark.parametrize('name', sorted(UPSTREAM_PARAM_COUNTS))
def test_effnetv1_and_effnetv2_parameter_counts(name):
  # In a StatelessScope Keras creates the variables without drawing their
  # initial values (most of the build time of the big models); shapes are
  # all a count needs.
  with keras.StatelessScope():
    model = effnetv2_model.EffNetV2Model(name)
  assert model.count_params() == UPSTREAM_PARAM_COUNTS[name]
  # summary() counts the same way, layer by layer.
  assert sum(layer.count_params() for layer in model.layers) == (
      UPSTREAM_PARAM_COUNTS[name])


def test_stage_rates_are_outside_the_weights_but_in_checkpoints(tmp_path):
  model = effnetv2_model.get_model('efficientnetv2-b0', model_config=dict(
      width_coefficient=0.25, depth_coefficient=0.25, feature_size=64,
      num_classes=10))
  assert not [w.path for w in model.weights
              if w.path.endswith(('/rate', '/survival_prob'))]
  model.set_dropout_rate(0.3)
  model.set_survival_prob(0.5)
  path = tf.train.Checkpoint(model=model).save(str(tmp_path / 'ckpt'))
  model.set_dropout_rate(0.0)
  model.set_survival_prob(None)
  tf.train.Checkpoint(model=model).restore(path).assert_consumed()
  assert model.dropout_rate == pytest.approx(0.3)
  last = f'blocks_{model.num_blocks - 1}_drop'
  probs = model.block_survival_probs()
  assert probs[last] == pytest.approx(1 - 0.5 * (model.num_blocks - 1) /
                                      model.num_blocks)


def test_changing_stage_rates_does_not_retrace():
  model = effnetv2_model.get_model('efficientnetv2-b0', model_config=dict(
      width_coefficient=0.25, depth_coefficient=0.25, feature_size=64,
      num_classes=10))
  step = tf.function(lambda x: model(x, training=True))
  images = tf.random.stateless_uniform([4, 32, 32, 3], SEED, -1, 1)
  model.set_dropout_rate(0.0)
  model.set_survival_prob(None)
  quiet = step(images).numpy()
  model.set_dropout_rate(0.9)
  noisy = step(images).numpy()
  assert step.experimental_get_tracing_count() == 1
  assert not np.allclose(quiet, noisy)


# -- effnetv2_configs_test.py --------------------------------------------------
def test_model_config():  # EffnetV2ConfigsTest.test_model_config
  for name in ('efficientnet-b0', 'efficientnetv2-s'):
    assert effnetv2_configs.get_model_config(name).model.model_name == name


# -- hparams ------------------------------------------------------------------
# Upstream's efficientnetv2/ has no hparams test; its Config class is the one
# of efficientdet/hparams_config.py, whose tests (hparams_config_test.py) are
# mirrored here with efficientnetv2's list separator '|' (efficientdet: '*').
def test_config_override():  # HparamsConfigTest.test_config_override
  c = hparams.Config({'a': 1, 'b': 2})
  assert c.as_dict() == {'a': 1, 'b': 2}
  c.update({'a': 10})
  assert c.as_dict() == {'a': 10, 'b': 2}
  c.b = 20
  assert c.as_dict() == {'a': 10, 'b': 20}
  c.override('a=true,b=30')
  assert c.as_dict() == {'a': True, 'b': 30}
  c.override('a=100,,,b=2.3,')  # Extra commas are fine.
  assert c.as_dict() == {'a': 100, 'b': 2.3}
  c.override('a=true,b=50')
  assert c.as_dict() == {'a': True, 'b': 50}
  with pytest.raises(ValueError):
    c.override('a=true,invalid_string')
  # Deviation (docs/deviations.md): a word where a number is ('b=ss',
  # upstream's 'a=2x3') is refused here, upstream stores the string.
  with pytest.raises(hparams.ConfigError, match="'b' takes a number"):
    c.override('b=ss')


def test_config_yaml(tmp_path):  # HparamsConfigTest.test_config_yaml
  path = tmp_path / 'x.yaml'
  path.write_text('x: 2\ny:\n  z: test\n')
  c = hparams.Config(dict(x=234, y=2342))
  c.override(str(path))
  assert c.as_dict() == {'x': 2, 'y': {'z': 'test'}}
  saved = tmp_path / 'y.yaml'
  c.save_to_yaml(str(saved))
  assert yaml.safe_load(saved.read_text()) == {'x': 2, 'y': {'z': 'test'}}


def test_config_override_recursive():  # test_config_override_recursive
  c = hparams.Config({'x': 1})
  c.override('y.y0=2,y.y1=3', allow_new_keys=True)
  assert c.as_dict() == {'x': 1, 'y': {'y0': 2, 'y1': 3}}
  c.update({'y': {'y0': 5, 'y1': {'y11': 100}}})
  assert c.as_dict() == {'x': 1, 'y': {'y0': 5, 'y1': {'y11': 100}}}
  assert c.y.y1.y11 == 100


def test_config_override_list():  # test_config_override_list
  c = hparams.Config({'x': [1.0, 2.0]})
  c.override('x=3.0|4.0|5.0')
  assert c.as_dict() == {'x': [3.0, 4.0, 5.0]}


# Every key of upstream's hparams.base_config (a6bb1ff, lines 221-312).
UPSTREAM_BASE_KEYS = """
model.model_name model.data_format model.feature_size model.bn_type
model.bn_momentum model.bn_epsilon model.gn_groups model.depth_divisor
model.min_depth model.act_fn model.survival_prob model.local_pooling
model.headbias model.conv_dropout model.dropout_rate model.depth_coefficient
model.width_coefficient model.blocks_args model.num_classes
train.stages train.epochs train.min_steps train.optimizer train.lr_sched
train.lr_base train.lr_decay_epoch train.lr_decay_factor train.lr_warmup_epoch
train.lr_min train.ema_decay train.weight_decay train.weight_decay_inc
train.weight_decay_exclude train.label_smoothing train.gclip train.batch_size
train.isize train.split train.loss_type train.ft_init_ckpt train.ft_init_ema
train.varsexp train.sched
eval.batch_size eval.isize eval.split
data.ds_name data.augname data.ra_num_layers data.ram data.mixup_alpha
data.cutmix_alpha data.ibase data.cache data.resize data.data_dir
data.multiclass data.num_classes data.tfds_name data.try_gcs data.tfds_split
runtime.iterations_per_loop runtime.skip_host_call runtime.mixed_precision
runtime.use_async_checkpointing runtime.log_step_count_steps
runtime.keep_checkpoint_max runtime.keep_checkpoint_every_n_hours
runtime.strategy
""".split() + [f'data.splits.{split}.{key}'
               for split in ('train', 'eval', 'minival', 'trainval')
               for key in ('num_images', 'files', 'tfds_split', 'slice')]


def test_base_config_has_every_upstream_key():
  ours = run_dir.flatten(hparams.base_config.as_dict())
  assert [key for key in UPSTREAM_BASE_KEYS if key not in ours] == []
  assert set(hparams.IGNORED_UPSTREAM_KEYS) <= set(UPSTREAM_BASE_KEYS)


def test_upstream_override_strings_merge_and_unused_keys_warn_once(caplog):
  config = main.build_config(
      'efficientnetv2-b0', 'cifar10ft',
      'data.try_gcs=false,runtime.iterations_per_loop=100,'
      'runtime.skip_host_call=true,runtime.strategy=gpus')
  assert config.runtime.iterations_per_loop == 100
  warnings = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith('ignored:')]
  assert len(warnings) == 1
  for key in ('data.try_gcs', 'runtime.iterations_per_loop',
              'runtime.skip_host_call'):
    assert key in warnings[0]
  # Upstream main_tf2.py's strategy names are understood.
  assert isinstance(train_lib.build_strategy(config.runtime.strategy),
                    tf.distribute.MirroredStrategy)


def test_plain_settings_do_not_warn(caplog):
  main.build_config('efficientnetv2-b0', 'cifar10ft', 'train.batch_size=64')
  assert not [r for r in caplog.records
              if r.getMessage().startswith('ignored:')]


def test_runs_saved_before_new_base_keys_still_resume():
  current = main.build_config('efficientnetv2-b0', 'fashion_mnist')
  saved = current.as_dict()
  del saved['data']['solarize_wrap']
  assert run_dir.config_differences(saved, current.as_dict()) == []
  current.data.solarize_wrap = False
  assert run_dir.config_differences(saved, current.as_dict()) == [
      'data.solarize_wrap']


@pytest.mark.parametrize('name', ['ImageNet', 'ImageNet21k', 'ImagenetFt',
                                  'Cifar10Ft', 'Cifar100Ft', 'FlowersFt',
                                  'TFFlowersFt', 'CarsFt'])
def test_dataset_configs_merge_like_upstream(name):
  # Upstream's main.py merges with `override`, which refuses new keys: its
  # CIFAR-style configs only merge because base_config has data.try_gcs.
  config = hparams.Config(hparams.base_config.as_dict())
  config.override(datasets.get_dataset_config(name))
  assert config.data.ds_name == datasets.get_dataset_config(name).data.ds_name


# -- datasets_test.py ---------------------------------------------------------
def _first_fake_batch(ds_class):
  inp = ds_class(is_training=False, data_dir='null', cache=False,
                 image_size=224, image_dtype=None,
                 augment=augment_spec.AugmentSpec(num_layers=2, magnitude=20),
                 mixup_alpha=0)
  return next(iter(inp.dataset(2)))


def test_imagenet():  # ImagenetInputTest.test_imagenet
  images, labels = _first_fake_batch(datasets.ImageNetInput)
  np.testing.assert_array_equal(labels[:, 0:4], [[0, 0, 0, 0], [0, 0, 0, 0]])
  # Upstream's fake images skip preprocessing: zeros, not (0 - 128) / 128.
  assert images.shape == (2, 224, 224, 3)
  assert not np.any(images.numpy())


def test_imagenet21k():  # ImagenetInputTest.test_imagenet21k
  images, labels = _first_fake_batch(datasets.ImageNet21kInput)
  np.testing.assert_array_equal(labels[:, 0:4], [[0, 0, 1, 1], [0, 0, 1, 1]])
  assert labels.shape == (2, 21843) and float(tf.reduce_sum(labels)) == 4
  assert not np.any(images.numpy())


def test_only_tfrecord_inputs_have_a_fake_mode():
  assert datasets.ImageNetInput(is_training=True, image_size=8,
                                data_dir='null').is_fake
  assert not datasets.CIFAR10Input(is_training=True, image_size=8,
                                   data_dir='null').is_fake


def test_dataset_config():  # DatasetConfigTest.test_dataset_config
  assert datasets.get_dataset_config('cifar10ft').data.ds_name == 'cifar10'


def _write_one_record_per_file(folder, num_files):
  for index in range(num_files):
    with tf.io.TFRecordWriter(os.path.join(folder,
                                           f'train-{index:05d}')) as writer:
      image = tf.io.encode_jpeg(tf.zeros([4, 4, 3], tf.uint8)).numpy()
      writer.write(tf.train.Example(features=tf.train.Features(feature={
          'image/encoded': tf.train.Feature(
              bytes_list=tf.train.BytesList(value=[image])),
          'image/class/label': tf.train.Feature(
              int64_list=tf.train.Int64List(value=[index + 1])),
      })).SerializeToString())


def _file_order(inp, passes):
  source = inp.make_source_dataset(0, 1).repeat(passes)
  return [int(np.argmax(label)) for _, label in source]


def test_imagenet_training_reads_files_in_a_seeded_shuffled_order(tmp_path):
  _write_one_record_per_file(str(tmp_path), 8)

  def make(is_training, seed=0):
    return datasets.ImageNetInput(is_training=is_training, image_size=32,
                                  data_dir=str(tmp_path), split='trainval',
                                  seed=seed)

  order = _file_order(make(True), passes=2)
  first, second = order[:8], order[8:]
  assert sorted(first) == sorted(second) == list(range(8))
  assert first != second  # A new order each epoch, as upstream.
  assert _file_order(make(True), passes=2) == order  # Seeded: resumable.
  assert _file_order(make(True, seed=1), passes=1) != first
  assert _file_order(make(False), passes=1) == list(range(8))


def test_shuffle_buffers_are_upstreams():
  imagenet = datasets.ImageNetInput(is_training=True, image_size=32)
  assert imagenet.shuffle_buffer_size() == 128 * 1024
  cached = datasets.CIFAR10Input(is_training=True, image_size=32, cache=True)
  assert cached.shuffle_buffer_size() == 16 * 1024
  streamed = datasets.CIFAR10Input(is_training=True, image_size=32,
                                   cache=False)
  assert streamed.shuffle_buffer_size() == 128 * 1024


# -- preprocessing_test.py -----------------------------------------------------
@pytest.mark.parametrize('augname', ['effnetv1_autoaug', 'effnetv1_randaug',
                                     None])
def test_preprocessing_legacy(augname):  # PreprocessingTest
  # Upstream's V1 path needs JPEG bytes and its test accepts the
  # ExtractJpegShape error on a decoded image; here decoded images work.
  image = tf.zeros((300, 300, 3), tf.float32)
  out = preprocessing.preprocess_image(
      image, 224, False, augment=augment_spec.AugmentSpec(policy=augname))
  assert out.shape == (224, 224, 3) and np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize('augname', ['autoaug', 'randaug', 'ft', 'ft_autoaug',
                                     None])
def test_preprocessing(augname):  # PreprocessingTest.test_preprocessing
  image = tf.zeros((300, 300, 3), tf.float32)
  out = preprocessing.preprocess_image(
      image, 224, True, seed=SEED,
      augment=augment_spec.AugmentSpec(policy=augname))
  assert out.shape == (224, 224, 3)
  assert np.all(np.abs(out.numpy()) <= 1.0 + 1e-6)


def _noise_jpeg(height, width):
  """Noise with 4:2:0 chroma (ImageNet's usual JPEG layout): neighbouring
  pixels differ, so a crop one pixel off gives other values."""
  rng = np.random.default_rng(height * 1000 + width)
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  return tf.io.encode_jpeg(tf.constant(image), chroma_downsampling=True)


def _upstream_legacy_eval(jpeg, image_size):
  """Upstream's V1 eval path from its facts: crop of side
  int(size / (size + 32) * min(H, W)) at offset (H - crop + 1) // 2, cut out
  of the JPEG, TF1 bicubic resize, ImageNet mean / std."""
  height, width = tf.image.extract_jpeg_shape(jpeg).numpy()[:2]
  crop = int(image_size / (image_size + 32) * min(height, width))
  window = [(height - crop + 1) // 2, (width - crop + 1) // 2, crop, crop]
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  image = tf.compat.v1.image.resize_bicubic(image[None],
                                            [image_size, image_size])[0]
  return ((image - preprocessing.IMAGENET_MEAN_RGB) /
          preprocessing.IMAGENET_STDDEV_RGB)


def test_legacy_eval_preprocessing_of_a_jpeg_is_upstreams():
  # 301 x 257 px at 224: crop 224, margins 77 and 33, both odd, so the two
  # offset roundings give different crops.
  jpeg = _noise_jpeg(301, 257)
  expected = _upstream_legacy_eval(jpeg, 224)
  got = preprocessing.preprocess_image(
      jpeg, 224, False,
      augment=augment_spec.AugmentSpec(policy='effnetv1_autoaug'))
  np.testing.assert_allclose(got, expected, atol=1e-5)
  # The test can fail: the crop rounded the other way gives other pixels.
  floor = tf.image.decode_and_crop_jpeg(jpeg, [77 // 2, 33 // 2, 224, 224],
                                        channels=3)
  other = ((tf.compat.v1.image.resize_bicubic(floor[None], [224, 224])[0] -
            preprocessing.IMAGENET_MEAN_RGB) /
           preprocessing.IMAGENET_STDDEV_RGB)
  assert np.abs(other.numpy() - expected).max() > 1e-2


# -- autoaugment_test.py -------------------------------------------------------
def test_autoaugment():  # AutoaugmentTest.test_autoaugment
  image = tf.zeros((224, 224, 3), tf.uint8)
  out = autoaugment.distort_image_with_autoaugment(image, SEED)
  assert out.shape == (224, 224, 3) and out.dtype == tf.uint8


def test_randaug():  # AutoaugmentTest.test_randaug
  image = tf.zeros((224, 224, 3), tf.uint8)
  out = autoaugment.distort_image_with_randaugment(image, 2, 15, SEED)
  assert out.shape == (224, 224, 3) and out.dtype == tf.uint8


ALL_GRAY_LEVELS = tf.tile(
    tf.reshape(tf.range(256), [16, 16, 1]), [1, 1, 3])


def _upstream_solarize(image, level):
  """Upstream's comparison: uint8 pixels against the Python int threshold,
  which TensorFlow converts to uint8 (this is what TF does, not a copy)."""
  threshold = int(level / 10 * 256)
  return tf.where(image < threshold, image, 255 - image)


@pytest.mark.parametrize('level', [3, 9.9, 10, 11.67, 15, 20])
def test_solarize_thresholds_wrap_as_upstreams(level):
  image = tf.cast(ALL_GRAY_LEVELS, tf.uint8)
  op = autoaugment.make_op('Solarize', level, 100, 40)
  np.testing.assert_array_equal(op(image, SEED),
                                _upstream_solarize(image, level))


def test_solarize_at_magnitude_10_inverts_every_pixel_unless_asked_not_to():
  image = tf.cast(ALL_GRAY_LEVELS, tf.uint8)
  wrapped = autoaugment.make_op('Solarize', 10, 100, 40)(image, SEED)
  np.testing.assert_array_equal(wrapped, 255 - image)
  intended = autoaugment.make_op('Solarize', 10, 100, 40,
                                 solarize_wrap=False)(image, SEED)
  np.testing.assert_array_equal(intended, image)
  # AutoAugment v0 has ('Solarize', 0.6, 10) and RandAugment reaches it
  # from magnitude 10; the config key reaches both through preprocessing.
  assert ('Solarize', 0.6, 10) in [op for sub in autoaugment.policy_v0()
                                   for op in sub]
  gradient = tf.cast(tf.reshape(tf.range(0, 256, 4), [8, 8, 1]), tf.uint8)
  outputs = [preprocessing.preprocess_image(
      gradient, 8, True, seed=SEED, augment=augment_spec.AugmentSpec(
          policy='randaug', num_layers=1, magnitude=10, ops=['Solarize'],
          solarize_wrap=wrap))
             for wrap in (True, False)]
  # (255 - x - 128) / 128 + (x - 128) / 128: every pixel was inverted.
  np.testing.assert_allclose(outputs[0] + outputs[1], -1 / 128, atol=1e-6)
  config = main.build_config('efficientnetv2-b0', 'cifar10ft',
                             'data.solarize_wrap=false')
  inp = datasets.build_dataset_input(True, progressive.StageSettings(
      16, augment_spec.AugmentSpec.from_config(config.data)), config)
  assert inp.augment.solarize_wrap is False


def _upstream_contrast_target(image):
  """Upstream's Contrast target as its ops compute it: the sum of a 256-bin
  histogram of the gray image, over 256, clipped and cast to uint8."""
  gray = tf.cast(tf.image.rgb_to_grayscale(image), tf.int32)
  hist = tf.histogram_fixed_width(gray, [0, 255], nbins=256)
  mean = tf.reduce_sum(tf.cast(hist, tf.float32)) / 256.0
  return int(tf.cast(tf.clip_by_value(mean, 0.0, 255.0), tf.uint8))


@pytest.mark.parametrize('size', [16, 48, 56, 64, 300])
def test_upstream_contrast_blends_towards_a_target_set_by_the_image_size(
    size):
  rng = np.random.default_rng(size)
  dark = rng.integers(0, 40, (size, size, 3)).astype(np.uint8)
  bright = rng.integers(200, 256, (size, size, 3)).astype(np.uint8)
  for image in (dark, bright):
    x = tf.constant(image)
    # Factor 0 gives the blend target itself.
    target = autoaugment.contrast(x, 0.0, 'upstream').numpy()
    np.testing.assert_array_equal(target, _upstream_contrast_target(x))
  # The port's own Contrast blends towards each image's mean instead.
  means = [int(autoaugment.contrast(tf.constant(i), 0.0).numpy()[0, 0, 0])
           for i in (dark, bright)]
  assert means[0] < 40 and means[1] >= 200


def test_upstream_sharpness_truncates_the_smoothed_image():
  image = tf.constant(np.random.default_rng(5).integers(
      0, 256, (24, 24, 3)).astype(np.uint8))
  rounded = autoaugment.sharpness(image, 0.0).numpy().astype(int)
  truncated = autoaugment.sharpness(image, 0.0, 'upstream').numpy().astype(int)
  # The one-pixel border keeps the image on both.
  np.testing.assert_array_equal(truncated[0], image.numpy()[0])
  np.testing.assert_array_equal(rounded[0], truncated[0])
  inside = (rounded - truncated)[1:-1, 1:-1]
  assert set(np.unique(inside)) == {0, 1}


def test_enhance_pixels_key_reaches_the_training_images():
  image = tf.cast(tf.reshape(tf.range(0, 256, 4), [8, 8, 1]), tf.uint8)
  outputs = {pixels: preprocessing.preprocess_image(
      image, 8, True, seed=SEED, augment=augment_spec.AugmentSpec(
          policy='randaug', num_layers=1, magnitude=10, ops=['Contrast'],
          enhance_pixels=pixels)).numpy()
             for pixels in ('pil', 'upstream')}
  assert np.abs(outputs['pil'] - outputs['upstream']).max() > 0.1
  config = main.build_config('efficientnetv2-b0', 'fashion_mnist',
                             'data.enhance_pixels=upstream')
  inp = datasets.build_dataset_input(True, progressive.StageSettings(
      16, augment_spec.AugmentSpec.from_config(config.data)), config)
  assert inp.augment.enhance_pixels == 'upstream'
  assert augment_spec.AugmentSpec.from_config(main.build_config(
      'efficientnetv2-b0', 'fashion_mnist').data).enhance_pixels == 'pil'


# -- utils_test.py --------------------------------------------------------------
def _lr(step, **kwargs):
  args = dict(initial_lr=1.0, steps_per_epoch=None, total_steps=None,
              warmup_epochs=None)
  args.update(kwargs)
  return float(utils.learning_rate_at(step, **args))


def test_constant_lr():  # UtilsTest.test_constant_lr
  assert _lr(10, lr_decay_type='constant') == pytest.approx(1.0)


def test_linear_lr():  # UtilsTest.test_linear_lr
  for step, expected in ((0, 1.0), (5, 0.5), (10, 0.0)):
    assert _lr(step, total_steps=10, lr_decay_type='linear') == (
        pytest.approx(expected, abs=1e-6))


def test_cosine_lr():  # UtilsTest.test_cosine_lr
  for step, expected in ((4, 0.654508), (5, 0.5), (6, 0.345491)):
    assert _lr(step, total_steps=10, lr_decay_type='cosine') == (
        pytest.approx(expected, abs=1e-5))


def test_exponential_lr():  # UtilsTest.test_exponential_lr
  for step, expected in ((5, 1.0), (25, 0.5), (70, 0.125)):
    assert _lr(step, total_steps=100, steps_per_epoch=10, decay_epochs=2,
               decay_factor=0.5, lr_decay_type='exponential') == (
                   pytest.approx(expected))


def test_warmup():  # UtilsTest.test_warmup
  for step, expected in ((5, 0.25), (35, 1.0)):
    assert _lr(step, total_steps=100, steps_per_epoch=10, warmup_epochs=2,
               lr_decay_type='constant') == pytest.approx(expected)


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('nesterov', [False, True])
def test_momentum_optimizer_is_tf1s_with_a_changing_learning_rate(
    nesterov, fused):
  variable = keras.Variable(np.array([1.0, -2.0], np.float32))
  optimizer = utils.TF1Momentum(learning_rate=0.1, momentum=0.9,
                                nesterov=nesterov, fused=fused)
  optimizer.build([variable])
  grads = [np.array([0.5, 1.0]), np.array([-1.0, 2.0]), np.array([2.0, 0.0])]
  rates = [0.1, 0.3, 0.05]
  expected, accumulation = np.array([1.0, -2.0]), np.zeros(2)
  for grad, rate in zip(grads, rates):
    optimizer.learning_rate = rate
    optimizer.apply([tf.constant(grad, tf.float32)], [variable])
    # TF1 MomentumOptimizer: accum = m * accum + g; var -= lr * accum.
    accumulation = 0.9 * accumulation + grad
    step = grad + 0.9 * accumulation if nesterov else accumulation
    expected = expected - rate * step
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)
  assert isinstance(utils.build_optimizer('momentum'), utils.TF1Momentum)


# -- smoke_test.py ---------------------------------------------------------------
# test_tpu_b0_model_bfloat_single_step and test_tpu_b0_model_single_step_gpu
# need a TPU or a GPU (and channels_first); they cannot run on this CPU suite.
def test_cpu_b0_model_single_step(tmp_path):  # EfficientNetV2Test
  # Upstream runs V2-S at full size on fake data; a tiny B0 here.
  config = main.build_config(
      'efficientnetv2-b0', 'ImageNet',
      'train.batch_size=2,eval.batch_size=2,train.epochs=0,train.min_steps=1,'
      'train.stages=0,train.lr_base=0,data.splits.eval.num_images=6,'
      'model.width_coefficient=0.25,model.depth_coefficient=0.25,'
      'model.feature_size=64,train.isize=32,eval.isize=32,'
      'runtime.mixed_precision=false')
  # Upstream then runs --mode=eval; --mode=train here evaluates once itself.
  result = main.run('train', config, str(tmp_path), data_dir='null')
  assert result['global_step'] == 1 and result['eval/num_examples'] == 6


# -- TPU batch normalization ----------------------------------------------------
def test_tpu_bn_groups_are_upstreams():
  assert effnetv2_model.replica_groups(1) == [[0]]
  assert effnetv2_model.replica_groups(4) == [[0, 1, 2, 3]]
  assert effnetv2_model.replica_groups(16) == [list(range(8)),
                                               list(range(8, 16))]
  with pytest.raises(ValueError, match='groups of 8'):
    effnetv2_model.replica_groups(12)
  assert effnetv2_model.bn_type_for(None, on_tpu=True) == 'tpu_bn'
  assert effnetv2_model.bn_type_for('gn', on_tpu=True) == 'gn'
  assert effnetv2_model.bn_type_for(None, on_tpu=False) is None


def test_tpu_bn_group_mean_of_sixteen_faked_replicas():
  groups = effnetv2_model.replica_groups(16)
  rng = np.random.default_rng(0)
  values = [tf.constant(rng.normal(size=(3,)), tf.float32) for _ in range(16)]
  # A collective sums what every replica sends: collect that first, then
  # hand each replica the sum.
  sent = []
  for replica, value in enumerate(values):
    effnetv2_model.grouped_replica_mean(
        value, replica, groups, lambda x: sent.append(x) or tf.zeros_like(x))
  total = tf.add_n(sent)
  for replica, value in enumerate(values):
    got = effnetv2_model.grouped_replica_mean(value, replica, groups,
                                              lambda x: total)
    first = replica // 8 * 8
    np.testing.assert_allclose(got, np.mean(values[first:first + 8], axis=0),
                               atol=1e-6)


def test_tpu_bn_group_variance_comes_from_each_replicas_moments():
  rng = np.random.default_rng(1)
  shards = rng.normal(2.0, 3.0, (8, 2, 3, 3, 4)).astype(np.float32)
  means, variances = tf.nn.moments(tf.constant(shards), axes=[1, 2, 3])
  mean, variance = effnetv2_model.group_moments(
      means, variances, lambda t: tf.reduce_mean(t, axis=0))
  whole = shards.reshape(-1, 4)
  np.testing.assert_allclose(mean, whole.mean(axis=0), atol=1e-5)
  np.testing.assert_allclose(variance, whole.var(axis=0), rtol=1e-4)


_TWO_REPLICA_TPU_BN = r"""
import numpy as np
import tensorflow as tf
cpus = tf.config.list_physical_devices('CPU')
tf.config.set_logical_device_configuration(
    cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
from automl_effnetv2 import effnetv2_model
strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
rng = np.random.default_rng(1)
batch = rng.normal(2.0, 3.0, (4, 3, 3, 2)).astype(np.float32)
with strategy.scope():
  layer = effnetv2_model.TpuBatchNormalization(momentum=0.0, epsilon=1e-3)
  layer.build((None, 3, 3, 2))
dataset = tf.data.Dataset.from_tensors(batch).unbatch().batch(4)
inputs = next(iter(strategy.experimental_distribute_dataset(dataset)))
strategy.run(tf.function(lambda x: layer(x, training=True)), args=(inputs,))
# momentum 0: the moving statistics are the batch moments just computed.
np.testing.assert_allclose(layer.moving_mean.numpy(),
                           batch.mean(axis=(0, 1, 2)), atol=1e-5)
np.testing.assert_allclose(layer.moving_variance.numpy(),
                           batch.var(axis=(0, 1, 2)), rtol=1e-4)
print('ok')
"""


def test_tpu_bn_on_two_mirrored_replicas_uses_the_whole_batch():
  # In a process of its own: the collective keys of the suite's other
  # mirrored strategies in this process would collide with this one's.
  result = subprocess.run(
      [sys.executable, '-c', _TWO_REPLICA_TPU_BN], capture_output=True,
      text=True, check=False, cwd=REPO,
      env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 0 and 'ok' in result.stdout, result.stderr[-2000:]
