"""Every augmentation op against an answer known without our code.

Pixel ops are compared with Pillow's ImageOps / ImageEnhance (the reference
AutoAugment was defined with); geometric ops with exact numpy moves.
"""
import numpy as np
from PIL import Image, ImageEnhance, ImageOps
import pytest
import tensorflow as tf

from automl_effnetv2 import augment_spec
from automl_effnetv2 import autoaugment as aa

SEED = tf.constant([3, 4], tf.int64)


def _random_image(height=12, width=12, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _pattern(size=9):
  """An asymmetric image: distinct value at every pixel and channel."""
  values = np.arange(size * size * 3) % 251
  return values.reshape(size, size, 3).astype(np.uint8)


def test_invert():
  image = _random_image()
  np.testing.assert_array_equal(aa.invert(tf.constant(image)), 255 - image)


def test_solarize_inverts_only_at_or_above_threshold():
  image = np.array([[[0, 127, 128]], [[200, 255, 60]]], np.uint8)
  out = aa.solarize(tf.constant(image), 128).numpy()
  np.testing.assert_array_equal(out, [[[0, 127, 127]], [[55, 0, 60]]])
  np.testing.assert_array_equal(aa.solarize(tf.constant(image), 256), image)


def test_solarize_add_adds_below_threshold_and_clips():
  image = np.array([[[100, 127, 128]], [[20, 0, 250]]], np.uint8)
  out = aa.solarize_add(tf.constant(image), 110).numpy()
  np.testing.assert_array_equal(out, [[[210, 237, 128]], [[130, 110, 250]]])
  out = aa.solarize_add(tf.constant(image), 200).numpy()
  assert out[0, 0, 1] == 255  # 127 + 200 clipped.


@pytest.mark.parametrize('bits', [1, 2, 4, 6, 8])
def test_posterize_matches_pil(bits):
  image = _random_image()
  expected = np.array(ImageOps.posterize(Image.fromarray(image), bits))
  np.testing.assert_array_equal(aa.posterize(tf.constant(image), bits),
                                expected)


def test_equalize_matches_pil():
  image = _random_image(16, 16, seed=1) // 2 + 30  # Uneven histogram.
  expected = np.array(ImageOps.equalize(Image.fromarray(image)))
  np.testing.assert_array_equal(aa.equalize(tf.constant(image)), expected)


def test_equalize_leaves_a_constant_image_alone():
  image = np.full((5, 5, 3), 77, np.uint8)
  np.testing.assert_array_equal(aa.equalize(tf.constant(image)), image)


def test_autocontrast_matches_pil():
  image = (_random_image(10, 10, seed=2) // 3 + 40).astype(np.uint8)
  expected = np.array(ImageOps.autocontrast(Image.fromarray(image)))
  out = aa.autocontrast(tf.constant(image)).numpy()
  assert np.abs(out.astype(int) - expected).max() <= 1
  assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize('op,enhancer', [
    (aa.color, ImageEnhance.Color), (aa.contrast, ImageEnhance.Contrast),
    (aa.brightness, ImageEnhance.Brightness),
    (aa.sharpness, ImageEnhance.Sharpness)])
@pytest.mark.parametrize('factor', [0.1, 0.5, 1.0, 1.9])
def test_enhance_ops_match_pil(op, enhancer, factor):
  image = _random_image(12, 12, seed=3)
  expected = np.array(enhancer(Image.fromarray(image)).enhance(factor))
  out = op(tf.constant(image), factor).numpy()
  # PIL rounds where TF truncates, and computes grayscale in integers.
  assert np.abs(out.astype(int) - expected.astype(int)).max() <= 2


def test_enhance_ops_at_factor_one_are_identity():
  image = _random_image()
  for op in (aa.color, aa.contrast, aa.brightness, aa.sharpness):
    np.testing.assert_array_equal(op(tf.constant(image), 1.0), image)


def test_rotate_90_degrees_is_numpy_rot90():
  image = _pattern(9)
  out = aa.rotate(tf.constant(image), 90.0).numpy()
  np.testing.assert_array_equal(out, np.rot90(image, k=1))


def test_rotate_0_is_identity_and_45_fills_corners_with_gray():
  image = _pattern(9)
  np.testing.assert_array_equal(aa.rotate(tf.constant(image), 0.0), image)
  out = aa.rotate(tf.constant(image), 45.0).numpy()
  np.testing.assert_array_equal(out[0, 0], [128, 128, 128])
  np.testing.assert_array_equal(out[4, 4], image[4, 4])  # Centre stays.


def test_translate_x_moves_content_left_and_fills_gray():
  image = _pattern(8)
  out = aa.translate_x(tf.constant(image), 3).numpy()
  np.testing.assert_array_equal(out[:, :5], image[:, 3:])
  assert (out[:, 5:] == 128).all()
  out = aa.translate_x(tf.constant(image), -2).numpy()
  np.testing.assert_array_equal(out[:, 2:], image[:, :6])


def test_translate_y_moves_content_up():
  image = _pattern(8)
  out = aa.translate_y(tf.constant(image), 2).numpy()
  np.testing.assert_array_equal(out[:6], image[2:])
  assert (out[6:] == 128).all()


def test_shear_x_samples_x_plus_level_times_y():
  image = _pattern(8)
  out = aa.shear_x(tf.constant(image), 1.0).numpy()
  for y in range(8):
    for x in range(8):
      if x + y < 8:
        np.testing.assert_array_equal(out[y, x], image[y, x + y])
      else:
        np.testing.assert_array_equal(out[y, x], [128, 128, 128])


def test_shear_y_samples_y_plus_level_times_x():
  image = _pattern(8)
  out = aa.shear_y(tf.constant(image), 0.5).numpy()
  for y in range(8):
    for x in range(8):
      source_y = int(np.floor(y + 0.5 * x + 0.5))  # Nearest, halves up.
      if source_y < 8:
        np.testing.assert_array_equal(out[y, x], image[source_y, x])
  np.testing.assert_array_equal(aa.shear_y(tf.constant(image), 0.0), image)


def test_cutout_fills_one_square_and_nothing_else():
  image = np.full((32, 32, 3), 9, np.uint8)
  out = aa.cutout(tf.constant(image), 4, 200, SEED).numpy()
  filled = (out == 200).all(axis=2)
  assert 0 < filled.sum() <= 8 * 8
  rows, cols = np.nonzero(filled)
  box = filled[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
  assert box.all()  # One solid rectangle.
  assert (out[~filled] == 9).all()


def test_level_mapping_follows_upstream():
  image = tf.constant(_pattern(9))
  # Rotate level 10 -> +-30 degrees; level 0 -> identity.
  np.testing.assert_array_equal(
      aa.make_op('Rotate', 0, 100, 40)(image, SEED), image)
  out = aa.make_op('Rotate', 10, 100, 40)(image, SEED).numpy()
  assert out[4, 4].tolist() == _pattern(9)[4, 4].tolist()
  candidates = [aa.rotate(image, d).numpy() for d in (30.0, -30.0)]
  assert any((out == c).all() for c in candidates)
  # Solarize level 5 -> threshold 128; Posterize level 5 -> 2 bits.
  np.testing.assert_array_equal(aa.make_op('Solarize', 5, 100, 40)(image, SEED),
                                aa.solarize(image, 128))
  np.testing.assert_array_equal(
      aa.make_op('Posterize', 5, 100, 40)(image, SEED), aa.posterize(image, 2))
  # Enhance level 5 -> factor 1.0 (identity).
  np.testing.assert_array_equal(aa.make_op('Color', 5, 100, 40)(image, SEED),
                                image)
  # Translate level 10 with const 4 -> 4 pixels either way.
  out = aa.make_op('TranslateX', 10, 4, 40)(image, SEED).numpy()
  assert any((out == aa.translate_x(image, p).numpy()).all() for p in (4, -4))


def test_randaugment_is_deterministic_per_seed_and_varies_across_seeds():
  image = tf.constant(_random_image(32, 32, seed=5))
  first = aa.distort_image_with_randaugment(image, 2, 10, SEED).numpy()
  again = aa.distort_image_with_randaugment(image, 2, 10, SEED).numpy()
  np.testing.assert_array_equal(first, again)
  outputs = {aa.distort_image_with_randaugment(
      image, 2, 10, tf.constant([s, 1], tf.int64)).numpy().tobytes()
             for s in range(12)}
  assert len(outputs) > 6
  assert first.shape == (32, 32, 3) and first.dtype == np.uint8


def test_randaugment_zero_layers_is_identity():
  image = tf.constant(_random_image())
  np.testing.assert_array_equal(
      aa.distort_image_with_randaugment(image, 0, 10, SEED), image)


def test_autoaugment_policy_v0_runs_deterministically():
  image = tf.constant(_random_image(24, 24, seed=6))
  spec = augment_spec.AugmentSpec(policy='autoaug')
  outs = [aa.distort_image(image, 'autoaug', spec,
                           tf.constant([s, 2], tf.int64)).numpy()
          for s in range(8)]
  again = aa.distort_image(image, 'autoaug', spec,
                           tf.constant([0, 2], tf.int64)).numpy()
  np.testing.assert_array_equal(outs[0], again)
  assert len({o.tobytes() for o in outs}) > 3
  assert len(aa.policy_v0()) == 25


def test_unknown_augmentation_names_are_refused():
  with pytest.raises(ValueError, match='randaug'):
    aa.distort_image(tf.zeros([8, 8, 3], tf.uint8), 'randaugment',
                     augment_spec.NO_AUGMENTATION, SEED)
  with pytest.raises(ValueError, match='Rotate'):
    aa.make_op('Spin', 5, 100, 40)


def test_randaugment_draws_only_from_the_given_ops():
  image = tf.constant(_random_image(16, 16, seed=7))
  for s in range(6):
    seed = tf.constant([s, 9], tf.int64)
    out = aa.distort_image_with_randaugment(image, 1, 10, seed,
                                            ops=['Invert']).numpy()
    np.testing.assert_array_equal(out, 255 - image.numpy())
  # Two ops: each image is one of the two results, and both occur.
  results = set()
  for s in range(16):
    out = aa.distort_image_with_randaugment(
        image, 1, 10, tf.constant([s, 9], tf.int64),
        ops=['Invert', 'Posterize']).numpy()
    if np.array_equal(out, 255 - image.numpy()):
      results.add('Invert')
    else:
      np.testing.assert_array_equal(out, aa.posterize(image, 4).numpy())
      results.add('Posterize')
  assert results == {'Invert', 'Posterize'}


def test_identity_is_drawn_only_when_named_and_keeps_the_image():
  assert 'Identity' not in aa.RANDAUGMENT_OPS  # upstream's default
  image = tf.constant(_random_image(16, 16, seed=3))
  # With Invert beside it, each image is either untouched or inverted, and
  # both occur: Identity is a real draw, not a filter on the list.
  results = set()
  for s in range(16):
    out = aa.distort_image_with_randaugment(
        image, 1, 10, tf.constant([s, 5], tf.int64),
        ops=['Identity', 'Invert']).numpy()
    if np.array_equal(out, image.numpy()):
      results.add('Identity')
    else:
      np.testing.assert_array_equal(out, 255 - image.numpy())
      results.add('Invert')
  assert results == {'Identity', 'Invert'}


@pytest.mark.parametrize('fill, expected', [(None, 128), (0, 0), (255, 255)])
def test_fill_value_reaches_geometric_ops_and_cutout(fill, expected):
  image = tf.constant(np.full((16, 16, 3), 200, np.uint8))
  for name in ('TranslateX', 'Rotate', 'Cutout'):
    spec = augment_spec.AugmentSpec(
        policy='randaug', num_layers=1, magnitude=10, translate_const=6,
        cutout_const=4, ops=[name], fill=fill)
    out = aa.distort_image(image, 'randaug', spec, SEED).numpy()
    uncovered = out != 200
    assert uncovered.any(), name
    assert (out[uncovered] == expected).all(), (name, np.unique(out))
