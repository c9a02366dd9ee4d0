"""Per-image preprocessing: shapes, ranges, crops, channels, determinism."""
import numpy as np
import pytest
import tensorflow as tf

from automl_effnetv2 import augment_spec
from automl_effnetv2 import preprocessing

SEED = tf.constant([1, 2], tf.int64)


def _gray(height=28, width=28):
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (height, width, 1), dtype=np.uint8)


@pytest.mark.parametrize('augname', [None, 'randaug', 'autoaug', 'ft',
                                     'ft_randaug', 'effnetv1_autoaug'])
@pytest.mark.parametrize('size', [32, 64, 128])
def test_one_channel_images_come_out_rgb_at_any_size(augname, size):
  out = preprocessing.preprocess_image(
      tf.constant(_gray()), size, is_training=True, seed=SEED,
      augment=augment_spec.AugmentSpec(policy=augname, magnitude=10))
  assert out.shape == (size, size, 3) and out.dtype == tf.float32
  out = out.numpy()
  if augname and augname.startswith('effnetv1'):  # ImageNet mean/std.
    pixels = (out * preprocessing.IMAGENET_STDDEV_RGB +
              preprocessing.IMAGENET_MEAN_RGB)
    np.testing.assert_allclose(pixels[..., 0], pixels[..., 1], atol=1e-3)
    assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3
  else:
    if augname != 'ft':  # 'ft' cutout fills with colour noise.
      np.testing.assert_array_equal(out[..., 0], out[..., 1])  # Still gray.
    assert out.min() >= -1.0 and out.max() <= 1.0


@pytest.mark.parametrize('size', [32, 64])
def test_eval_is_deterministic_and_in_range(size):
  image = tf.constant(np.repeat(_gray(), 3, axis=2))
  first = preprocessing.preprocess_image(image, size, is_training=False)
  second = preprocessing.preprocess_image(image, size, is_training=False)
  np.testing.assert_array_equal(first, second)
  assert first.numpy().min() >= -1 and first.numpy().max() < 1


def test_default_output_scaling_is_upstreams():
  white = tf.fill([40, 40, 3], tf.constant(255, tf.uint8))
  out = preprocessing.preprocess_image(white, 32, is_training=False).numpy()
  np.testing.assert_allclose(out, (255 - 128) / 128)
  out = preprocessing.preprocess_image(
      white, 32, is_training=False,
      augment=augment_spec.AugmentSpec(policy='ft')).numpy()
  np.testing.assert_allclose(out, 1.0)


def test_center_crop_follows_size_over_size_plus_32():
  image = tf.zeros([100, 150, 3], tf.uint8)
  crop = preprocessing.center_crop(image, 64)
  assert crop.shape[:2] == (66, 66)  # int(64 / 96 * 100)


def test_eval_crop_keeps_the_centre():
  image = np.zeros((96, 96, 3), np.uint8)
  image[16:80, 16:80] = 255  # Bright centre, dark frame.
  out = preprocessing.preprocess_image(tf.constant(image), 64,
                                       is_training=False).numpy()
  assert out.min() > 0.9  # Crop of 64 px kept only the bright centre.


def test_training_randomness_depends_on_the_seed_only():
  image = tf.constant(np.repeat(_gray(), 3, axis=2))
  randaug = augment_spec.AugmentSpec(policy='randaug')
  a = preprocessing.preprocess_image(image, 32, True, seed=SEED,
                                     augment=randaug)
  b = preprocessing.preprocess_image(image, 32, True, seed=SEED,
                                     augment=randaug)
  c = preprocessing.preprocess_image(image, 32, True,
                                     seed=tf.constant([9, 9], tf.int64),
                                     augment=randaug)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_encoded_jpeg_input_is_decoded():
  jpeg = tf.io.encode_jpeg(tf.constant(np.repeat(_gray(), 3, axis=2)))
  out = preprocessing.preprocess_image(jpeg, 32, is_training=False)
  assert out.shape == (32, 32, 3)


def test_training_needs_a_seed():
  with pytest.raises(ValueError, match='seed'):
    preprocessing.preprocess_image(tf.constant(_gray()), 32, True)


def test_four_channel_images_are_refused():
  with pytest.raises(ValueError, match='1 or 3 channels'):
    preprocessing.to_rgb(tf.zeros([8, 8, 4], tf.uint8))
