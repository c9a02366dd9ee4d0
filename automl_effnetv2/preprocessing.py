"""Per-image preprocessing for training and evaluation.

Three families, chosen by `data.augname` as upstream does (decoded in
augment_spec, which also holds every augmentation setting):
- default (`randaug`, `autoaug`, `ra_aa`, None): train = random crop with
  area in [0.05, 1], bilinear resize, flip, optional augmentation; eval =
  centre crop of size/(size+32) when size < 320, resize; output (x-128)/128.
- `ft*` (fine-tuning): scale to [-1, 1], resize, flip, optional RandAugment /
  AutoAugment when the name contains it, cutout for 'ft' or '*cutout*'.
- `effnetv1_*`: EfficientNet V1's legacy path (crop area [0.08, 1], cut out
  of JPEG bytes while decoding, bicubic resize, ImageNet mean/std
  normalization).

Inputs are decoded images of any channel count or JPEG/PNG bytes. One-channel
images (Fashion-MNIST) are repeated to three channels first; upstream failed
on them. Randomness is stateless and driven by the `seed` argument.
"""
import tensorflow as tf

from automl_effnetv2 import augment_spec
from automl_effnetv2 import autoaugment

IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def to_rgb(image):
  """Decodes bytes if needed and returns a uint8 [H, W, 3] image."""
  if image.dtype == tf.string:
    image = tf.io.decode_image(image, channels=3, expand_animations=False)
  channels = image.shape[-1]
  if channels is None:
    image = tf.cond(tf.shape(image)[-1] == 1,
                    lambda: tf.image.grayscale_to_rgb(image),
                    lambda: image)
  elif channels == 1:
    image = tf.image.grayscale_to_rgb(image)
  elif channels != 3:
    raise ValueError(f'images must have 1 or 3 channels, got {channels}')
  image.set_shape([None, None, 3])
  return image


def _augment_uint8(image, policy, augment, seed):
  """Runs one of augment_spec.IMAGE_POLICIES on a float [0, 255] image."""
  dtype = image.dtype
  image = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
  image = autoaugment.distort_image(image, policy, augment, seed)
  return tf.cast(image, dtype)


def random_crop_window(shape, seed, area_range=(0.05, 1.0),
                       min_object_covered=0.0, aspect_ratio_range=(0.75, 1.33),
                       max_attempts=100):
  """(offset_y, offset_x, height, width) of a random crop of an image of
  `shape` ([H, W, C]), as tf.image.sample_distorted_bounding_box picks it."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([1, 0, 4], tf.float32), seed=seed,
      min_object_covered=min_object_covered,
      aspect_ratio_range=aspect_ratio_range, area_range=area_range,
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  return begin[0], begin[1], size[0], size[1]


def random_crop(image, seed, **window_args):
  """A random crop of a decoded image; see random_crop_window."""
  y, x, height, width = random_crop_window(tf.shape(image), seed,
                                           **window_args)
  return tf.slice(image, [y, x, 0], [height, width, -1])


def center_crop_window(height, width, image_size, legacy=False):
  """(offset_y, offset_x, crop, crop) of the centre square of side
  int(size / (size + 32) * min(H, W)).

  Upstream's two paths place it differently when H - crop is odd:
  preprocessing.py at (H - crop) // 2, the V1 path (`legacy`) at
  (H - crop + 1) // 2. The side is floored at 1 px, which only matters
  where upstream's empty crop fails.
  """
  ratio = image_size / (image_size + 32)
  crop = tf.cast(ratio * tf.cast(tf.minimum(height, width), tf.float32),
                 tf.int32)
  crop = tf.maximum(crop, 1)
  round_up = 1 if legacy else 0
  return ((height - crop + round_up) // 2, (width - crop + round_up) // 2,
          crop, crop)


def center_crop(image, image_size, legacy=False):
  """The centre crop of a decoded image; see center_crop_window."""
  shape = tf.shape(image)
  return tf.image.crop_to_bounding_box(
      image, *center_crop_window(shape[0], shape[1], image_size, legacy))


def decode_window(image, window_fn):
  """Cuts window_fn(H, W) -> (offset_y, offset_x, height, width) out of
  `image` as uint8 RGB.

  JPEG bytes are decoded only inside the window (decode_and_crop_jpeg), as
  upstream's V1 path reads them. Decoding the whole JPEG and then slicing
  is not the same: with subsampled chroma (4:2:0, ImageNet's usual
  encoding) the chroma upsampling at the window's edges differs. Decoded
  images and other bytes (PNG) are decoded whole, then sliced.
  """
  def from_pixels(pixels):
    pixels = to_rgb(pixels)
    shape = tf.shape(pixels)
    y, x, height, width = window_fn(shape[0], shape[1])
    return tf.slice(pixels, [y, x, 0], [height, width, 3])

  if image.dtype != tf.string:
    return from_pixels(image)

  def from_jpeg():
    shape = tf.image.extract_jpeg_shape(image)
    window = tf.stack(window_fn(shape[0], shape[1]))
    return tf.image.decode_and_crop_jpeg(image, window, channels=3)

  out = tf.cond(tf.io.is_jpeg(image), from_jpeg, lambda: from_pixels(image))
  out.set_shape([None, None, 3])
  return out


def legacy_resize(image, image_size):
  """The V1 path's resize: TF1's tf.image.resize_bicubic (no half-pixel
  centres, cubic coefficient -0.75), which tf.image.resize's 'bicubic' is
  not. The kernel is called directly; the TF1 wrapper logs a deprecation."""
  return tf.raw_ops.ResizeBicubic(
      images=image[None], size=[image_size, image_size], align_corners=False,
      half_pixel_centers=False)[0]


def preprocess_for_train(image, image_size, seed,
                         augment=augment_spec.NO_AUGMENTATION):
  """Random crop, resize, flip, augmentation; float in [0, 255]."""
  crop_seed, flip_seed, aug_seed = autoaugment.split_seed(seed, 3)
  image = random_crop(image, crop_seed)
  image = tf.image.resize(image, [image_size, image_size])
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  for policy in augment.image_policies:
    image = _augment_uint8(image, policy, augment, aug_seed)
  return image


def preprocess_for_eval(image, image_size):
  """Centre crop for sizes below 320, then resize; float in [0, 255]."""
  if image_size < 320:
    image = center_crop(image, image_size)
  return tf.image.resize(image, [image_size, image_size])


def preprocess_for_finetune(image, image_size, is_training, seed, augment):
  """Upstream's 'ft' path; output in [-1, 1]."""
  mean, std = 0.5, 0.5
  image = (tf.cast(image, tf.float32) / 255.0 - mean) / std
  image = tf.image.resize(image, [image_size, image_size])
  if not is_training:
    return image
  flip_seed, aug_seed, cutout_seed, noise_seed = autoaugment.split_seed(seed, 4)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  for policy in augment.image_policies:
    pixels = (image * std + mean) * 255.0
    pixels = _augment_uint8(pixels, policy, augment, aug_seed)
    image = (pixels / 255.0 - mean) / std
  if augment.finetune_cutout:
    # Upstream fills the hole with uniform noise in [0, 1).
    noise = tf.random.stateless_uniform(tf.shape(image), noise_seed)
    image = autoaugment.cutout(image, image_size // 4, noise, cutout_seed)
  return image


def preprocess_legacy(image, image_size, is_training, seed, augment):
  """EfficientNet V1's path; ImageNet-normalized output.

  `image` is encoded bytes or a decoded image. Crops, resize and
  normalization are upstream's preprocess_legacy.py, and JPEG bytes are
  cropped while decoding as there (decode_window), so the pixels are
  upstream's; upstream's path takes JPEG bytes only.
  """
  if is_training:
    crop_seed, flip_seed, aug_seed = autoaugment.split_seed(seed, 3)

    def window(height, width):
      sampled = random_crop_window(
          tf.stack([height, width, 3]), crop_seed, area_range=(0.08, 1.0),
          min_object_covered=0.1, aspect_ratio_range=(3. / 4., 4. / 3.),
          max_attempts=10)
      # V1 falls back to the centre crop when sampling returned the full
      # image. (Upstream compares [H, W, C] with the JPEG's own channel
      # count, so a grayscale or CMYK JPEG never falls back there; here H
      # and W decide, for every input.)
      full = tf.logical_and(tf.equal(sampled[2], height),
                            tf.equal(sampled[3], width))
      centre = center_crop_window(height, width, image_size, legacy=True)
      return tuple(tf.where(full, c, r) for c, r in zip(centre, sampled))

    image = legacy_resize(decode_window(image, window), image_size)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    for policy in augment.image_policies:
      image = _augment_uint8(image, policy, augment, aug_seed)
  else:
    image = legacy_resize(decode_window(
        image, lambda height, width: center_crop_window(
            height, width, image_size, legacy=True)), image_size)
  image = tf.cast(image, tf.float32)
  return (image - IMAGENET_MEAN_RGB) / IMAGENET_STDDEV_RGB


# Plain TensorFlow ops (Python branches on settings only): tf.data traces it
# as written, skipping autograph's source conversion (seconds per process).
@tf.autograph.experimental.do_not_convert
def preprocess_image(image, image_size, is_training, seed=None,
                     image_dtype=None, augment=augment_spec.NO_AUGMENTATION):
  """Preprocesses one image for training or evaluation.

  Args:
    image: encoded bytes, or a decoded [H, W, C] image with C in {1, 3}.
    image_size: output side length.
    is_training: random crops, flips and augmentation when True.
    seed: int32 [2] stateless seed; required when is_training.
    image_dtype: output dtype (float32 when None).
    augment: an augment_spec.AugmentSpec; its policy also picks the family
      (see the module docstring), for evaluation too.

  Returns:
    A [image_size, image_size, 3] image; [-1, 1] for the default and ft paths.
  """
  if is_training and seed is None:
    raise ValueError('training preprocessing needs a stateless seed')
  if augment.family != 'legacy':  # The V1 path decodes its crop itself.
    image = to_rgb(image)
  if augment.family == 'legacy':
    out = preprocess_legacy(image, image_size, is_training, seed, augment)
  elif augment.family == 'finetune':
    out = preprocess_for_finetune(image, image_size, is_training, seed,
                                  augment)
  else:
    if is_training:
      out = preprocess_for_train(image, image_size, seed, augment)
    else:
      out = preprocess_for_eval(image, image_size)
    out = (out - 128.0) / 128.0
  out = tf.reshape(out, [image_size, image_size, 3])
  return tf.cast(out, image_dtype or tf.float32)
