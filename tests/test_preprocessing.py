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


# -- V1 path on JPEG bytes: the crop is cut out while decoding ----------------
V1 = augment_spec.AugmentSpec(policy='effnetv1_autoaug')


def _chroma_subsampled_jpeg(height, width):
  """Noise encoded with 4:2:0 chroma, ImageNet's usual JPEG layout."""
  rng = np.random.default_rng(height * 1000 + width)
  image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
  return tf.io.encode_jpeg(tf.constant(image), chroma_downsampling=True)


def _v1_eval_reference(jpeg, image_size):
  """EfficientNet V1's eval sequence, written out from its description:
  a square of side int(size / (size + 32) * min(H, W)) at offset
  (H - side + 1) // 2 decoded with decode_and_crop_jpeg, TF1 bicubic
  resize, ImageNet mean / std."""
  height, width = tf.image.extract_jpeg_shape(jpeg).numpy()[:2]
  side = int(image_size / (image_size + 32) * min(height, width))
  window = [(height - side + 1) // 2, (width - side + 1) // 2, side, side]
  image = tf.image.decode_and_crop_jpeg(jpeg, window, channels=3)
  resized = tf.compat.v1.image.resize_bicubic(image[None],
                                              [image_size, image_size])[0]
  normalized = ((resized - preprocessing.IMAGENET_MEAN_RGB) /
                preprocessing.IMAGENET_STDDEV_RGB)
  return window, image.numpy(), normalized.numpy()


@pytest.mark.parametrize('height,width', [(300, 200), (200, 300), (256, 256)])
def test_v1_eval_decodes_only_the_crop_of_a_jpeg(height, width):
  jpeg = _chroma_subsampled_jpeg(height, width)
  window, cropped, expected = _v1_eval_reference(jpeg, 224)
  # The test can fail: decoding whole and then cropping gives other pixels.
  y, x, side, _ = window
  whole = tf.io.decode_jpeg(jpeg, channels=3).numpy()
  assert not np.array_equal(whole[y:y + side, x:x + side], cropped)
  decoded_first = preprocessing.preprocess_image(
      tf.constant(whole), 224, False, augment=V1).numpy()
  assert not np.array_equal(decoded_first, expected)

  got = preprocessing.preprocess_image(jpeg, 224, False, augment=V1).numpy()
  np.testing.assert_array_equal(got, expected)


@pytest.fixture
def crop_windows(monkeypatch):
  """The crop windows decode_and_crop_jpeg is called with, in order."""
  windows = []
  decode_and_crop = tf.image.decode_and_crop_jpeg

  def spy(contents, crop_window, **kwargs):
    windows.append(crop_window.numpy().tolist())
    return decode_and_crop(contents, crop_window, **kwargs)

  monkeypatch.setattr(tf.image, 'decode_and_crop_jpeg', spy)
  return windows


def test_v1_training_decodes_only_the_crop_of_a_jpeg(crop_windows):
  jpeg = _chroma_subsampled_jpeg(300, 200)
  windows = crop_windows
  # A seed whose window's edge falls where the two decodings differ.
  seed = tf.constant([4, 2], tf.int64)
  got = preprocessing.preprocess_image(jpeg, 64, True, seed=seed,
                                       augment=V1).numpy()
  assert len(windows) == 1
  y, x, height, width = windows[0]
  assert (height, width) != (300, 200)  # A random crop, not the fallback.
  # A decoded image takes the same window for the same seed, so it gives
  # the same output once its window holds the crop-decoded pixels.
  whole = tf.io.decode_jpeg(jpeg, channels=3).numpy()
  # tf.io's name for the op, which the spy on tf.image leaves alone.
  cropped = tf.io.decode_and_crop_jpeg(jpeg, windows[0], channels=3).numpy()
  assert not np.array_equal(whole[y:y + height, x:x + width], cropped)
  patched = whole.copy()
  patched[y:y + height, x:x + width] = cropped
  np.testing.assert_array_equal(got, preprocessing.preprocess_image(
      tf.constant(patched), 64, True, seed=seed, augment=V1))
  assert not np.array_equal(got, preprocessing.preprocess_image(
      tf.constant(whole), 64, True, seed=seed, augment=V1))


def test_v1_training_falls_back_to_the_centre_crop_of_a_jpeg(crop_windows):
  # No crop of a 4 x 64 image has both aspect ratio in [3/4, 4/3] and area
  # in [0.08, 1], so sampling returns the whole image and V1 takes its
  # centre crop: side int(224 / 256 * 4) = 3 at offsets (1, 31).
  jpeg = _chroma_subsampled_jpeg(4, 64)
  out = preprocessing.preprocess_image(jpeg, 224, True, seed=SEED,
                                       augment=V1)
  assert out.shape == (224, 224, 3)
  assert crop_windows == [[1, 31, 3, 3]]


def test_v1_path_reads_png_bytes_and_runs_in_a_dataset():
  image = np.repeat(_gray(40, 36), 3, axis=2)
  png = tf.io.encode_png(tf.constant(image))
  np.testing.assert_array_equal(
      preprocessing.preprocess_image(png, 32, False, augment=V1),
      preprocessing.preprocess_image(tf.constant(image), 32, False,
                                     augment=V1))
  jpeg = _chroma_subsampled_jpeg(40, 36)
  dataset = tf.data.Dataset.from_tensors(jpeg).map(
      lambda contents: preprocessing.preprocess_image(
          contents, 32, True, seed=SEED, augment=V1))
  [graph_out] = list(dataset)
  np.testing.assert_array_equal(graph_out, preprocessing.preprocess_image(
      jpeg, 32, True, seed=SEED, augment=V1))
