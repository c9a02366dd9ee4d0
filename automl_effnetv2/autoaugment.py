"""AutoAugment (policy v0) and RandAugment in core TensorFlow.

AutoAugment: Cubuk et al., https://arxiv.org/abs/1805.09501
RandAugment: Cubuk et al., https://arxiv.org/abs/1909.13719

Every op takes and returns a uint8 [H, W, 3] image. Magnitudes use upstream's
scale: a level in [0, 10] (`MAX_LEVEL`) is mapped per op (e.g. rotate
level / 10 * 30 degrees); RandAugment applies its magnitude M as that level,
so M > 10 extrapolates (upstream's V2-M uses 15, V2-L 20).

Differences from upstream (docs/deviations.md):
- Geometric ops use `tf.raw_ops.ImageProjectiveTransformV3` instead of
  tensorflow_addons (which does not import on TF 2.21), with the same
  transforms, nearest-neighbour sampling and gray fill.
- All randomness is stateless and comes from an explicit `seed`, so an
  example's augmentation is a function of (run seed, example index): resumed
  runs see exactly the images an uninterrupted run sees.
- Contrast blends towards the mean gray level, as PIL does; upstream used
  pixel_count / 256 (a bug that made the target depend on image size).
  Sharpness rounds its smoothed image, as PIL does; upstream truncated it.
  `enhance_pixels='upstream'` (`data.enhance_pixels=upstream`) gives
  upstream's pixels for both, for runs compared side by side with upstream.

Kept on purpose: upstream compares uint8 pixels with Solarize's threshold
int(level / 10 * 256), and TensorFlow converts a Python int to uint8 modulo
256, so from level 10 up the threshold wraps (256 -> 0 inverts every pixel,
384 -> 128). `solarize_wrap=False` (`data.solarize_wrap=false`) gives the
intended op, where thresholds of 256 and more leave the image unchanged.
"""
import functools
import math
from typing import Callable, List, Sequence, Tuple

import tensorflow as tf

from automl_effnetv2 import registry

MAX_LEVEL = 10.0
REPLACE_GRAY = (128, 128, 128)
# How Contrast and Sharpness compute the image they blend with: 'pil' as
# PIL does, 'upstream' as upstream's code does (see `contrast`, `sharpness`).
ENHANCE_PIXELS = ('pil', 'upstream')

# Pixel constants for translate and cutout: (translate_const, cutout_const).
RANDAUGMENT_CONSTS = (100, 40)
AUTOAUGMENT_CONSTS = (250, 100)


# -- seeds -------------------------------------------------------------------
def split_seed(seed, num: int):
  """`num` independent stateless seeds derived from one."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))


def _uniform(seed, minval=0.0, maxval=1.0):
  return tf.random.stateless_uniform([], seed, minval=minval, maxval=maxval)


def _random_sign(value, seed):
  """Negates `value` with probability 1/2."""
  return tf.where(_uniform(seed) < 0.5, -value, value)


# -- pixel ops ---------------------------------------------------------------
def blend(image1, image2, factor):
  """image1 + factor * (image2 - image1), clipped to uint8 when extrapolating."""
  image1 = tf.cast(image1, tf.float32)
  image2 = tf.cast(image2, tf.float32)
  mixed = image1 + factor * (image2 - image1)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def invert(image):
  return 255 - image


def solarize(image, threshold=128):
  """Inverts every pixel at or above the threshold."""
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_threshold(level, wrap: bool = True) -> int:
  """Upstream's threshold int(level / 10 * 256), wrapped modulo 256 as its
  comparison with a uint8 image does (see the module docstring)."""
  threshold = int(level / MAX_LEVEL * 256)
  return threshold % 256 if wrap else threshold


def solarize_add(image, addition=0, threshold=128):
  """Adds `addition` to pixels below the threshold, clipped to [0, 255]."""
  added = tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255)
  return tf.where(tf.cast(image, tf.int32) < threshold,
                  tf.cast(added, tf.uint8), image)


def posterize(image, bits):
  """Keeps the `bits` most significant bits of every pixel."""
  shift = tf.cast(8 - bits, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _grayscale(image):
  return tf.image.rgb_to_grayscale(image)


def color(image, factor):
  """PIL ImageEnhance.Color: blend with the grayscale image."""
  degenerate = tf.image.grayscale_to_rgb(_grayscale(image))
  return blend(degenerate, image, factor)


def contrast(image, factor, enhance_pixels='pil'):
  """PIL ImageEnhance.Contrast: blend with the image's mean gray level.

  'upstream': blend with upstream's target instead, the sum of a 256-bin
  histogram of the gray image over 256, which is the pixel count / 256
  whatever the pixels (9 at 48 px, 12 at 56, 16 at 64), truncated to uint8.
  """
  if enhance_pixels == 'upstream':
    pixels = tf.cast(tf.shape(image)[0] * tf.shape(image)[1], tf.float32)
    target = tf.floor(tf.minimum(pixels / 256.0, 255.0))
  else:
    target = tf.round(tf.reduce_mean(tf.cast(_grayscale(image), tf.float32)))
  degenerate = tf.cast(tf.fill(tf.shape(image), target), tf.uint8)
  return blend(degenerate, image, factor)


def brightness(image, factor):
  """PIL ImageEnhance.Brightness: blend with black."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor, enhance_pixels='pil'):
  """PIL ImageEnhance.Sharpness: blend with a smoothed image (border kept).

  'upstream': the smoothed image is truncated to uint8, not rounded.
  """
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smoothed = tf.nn.depthwise_conv2d(
      tf.cast(image, tf.float32)[None], kernel, [1, 1, 1, 1], 'VALID')[0]
  to_level = tf.floor if enhance_pixels == 'upstream' else tf.round
  smoothed = tf.cast(tf.clip_by_value(to_level(smoothed), 0.0, 255.0),
                     tf.uint8)
  inside = tf.pad(tf.ones_like(smoothed, tf.bool), [[1, 1], [1, 1], [0, 0]])
  degenerate = tf.where(
      inside, tf.pad(smoothed, [[1, 1], [1, 1], [0, 0]]), image)
  return blend(degenerate, image, factor)


def autocontrast(image):
  """Stretches each channel so its darkest pixel is 0 and brightest 255."""
  def stretch(channel):
    channel = tf.cast(channel, tf.float32)
    lo, hi = tf.reduce_min(channel), tf.reduce_max(channel)
    scale = 255.0 / tf.maximum(hi - lo, 1.0)
    stretched = tf.clip_by_value((channel - lo) * scale, 0.0, 255.0)
    return tf.cast(tf.where(hi > lo, stretched, channel), tf.uint8)

  return tf.stack([stretch(image[:, :, c]) for c in range(3)], axis=2)


def equalize(image):
  """PIL ImageOps.equalize: per-channel histogram equalization."""
  def equalize_channel(channel):
    channel = tf.cast(channel, tf.int32)
    histogram = tf.math.bincount(channel, minlength=256, maxlength=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    # PIL leaves out the last nonzero bin when computing the step.
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    safe_step = tf.maximum(step, 1)
    lut = (tf.cumsum(histogram) + safe_step // 2) // safe_step
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.cast(tf.where(step > 0, tf.gather(lut, channel), channel),
                   tf.uint8)

  return tf.stack([equalize_channel(image[:, :, c]) for c in range(3)], axis=2)


def cutout(image, pad_size, replace, seed):
  """Fills a (2 * pad_size)^2 square at a random centre with `replace`.

  `replace` is a scalar or an image-shaped tensor (the `ft` path fills with
  noise). The square is clipped at the borders.
  """
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  seed_y, seed_x = split_seed(seed, 2)
  center_y = tf.random.stateless_uniform([], seed_y, 0, height, tf.int32)
  center_x = tf.random.stateless_uniform([], seed_x, 0, width, tf.int32)
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = ((rows >= center_y - pad_size) & (rows < center_y + pad_size) &
            (cols >= center_x - pad_size) & (cols < center_x + pad_size))
  fill = tf.cast(replace, image.dtype) * tf.ones_like(image)
  return tf.where(inside[:, :, None], fill, image)


# -- geometric ops -----------------------------------------------------------
def _transform(image, transform: Sequence, replace):
  """Applies a projective transform (output -> input coordinates).

  Pixels that come from outside the image get `replace`, as upstream's
  wrap/unwrap did: an extra all-ones channel marks the pixels that were
  sampled from inside the image.
  """
  image = tf.convert_to_tensor(image)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  wrapped = tf.concat(
      [tf.cast(image, tf.float32), tf.ones([height, width, 1], tf.float32)], 2)
  transform = tf.cast(tf.reshape(tf.stack(transform), [1, 8]), tf.float32)
  moved = tf.raw_ops.ImageProjectiveTransformV3(
      images=wrapped[None], transforms=transform,
      output_shape=tf.stack([height, width]), fill_value=0.0,
      interpolation='NEAREST', fill_mode='CONSTANT')[0]
  inside = moved[:, :, 3:] > 0
  fill = tf.cast(tf.reshape(replace, [1, 1, -1]), tf.float32)
  out = tf.where(inside, moved[:, :, :3], fill * tf.ones_like(moved[:, :, :3]))
  return tf.cast(out, image.dtype)


def rotate(image, degrees, replace=REPLACE_GRAY):
  """Rotates counterclockwise by `degrees` about the image centre."""
  radians = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  h = tf.cast(tf.shape(image)[0], tf.float32) - 1.0
  w = tf.cast(tf.shape(image)[1], tf.float32) - 1.0
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_offset = (w - (cos * w - sin * h)) / 2.0
  y_offset = (h - (sin * w + cos * h)) / 2.0
  return _transform(image, [cos, -sin, x_offset, sin, cos, y_offset, 0., 0.],
                    replace)


def translate_x(image, pixels, replace=REPLACE_GRAY):
  """Moves the content `pixels` to the left (negative: to the right)."""
  pixels = tf.cast(pixels, tf.float32)
  return _transform(image, [1., 0., pixels, 0., 1., 0., 0., 0.], replace)


def translate_y(image, pixels, replace=REPLACE_GRAY):
  """Moves the content `pixels` up (negative: down)."""
  pixels = tf.cast(pixels, tf.float32)
  return _transform(image, [1., 0., 0., 0., 1., pixels, 0., 0.], replace)


def shear_x(image, level, replace=REPLACE_GRAY):
  """Output (x, y) samples input (x + level * y, y)."""
  level = tf.cast(level, tf.float32)
  return _transform(image, [1., level, 0., 0., 1., 0., 0., 0.], replace)


def shear_y(image, level, replace=REPLACE_GRAY):
  """Output (x, y) samples input (x, y + level * x)."""
  level = tf.cast(level, tf.float32)
  return _transform(image, [1., 0., 0., level, 1., 0., 0., 0.], replace)


# -- levels to arguments -----------------------------------------------------
def _enhance_factor(level):
  return level / MAX_LEVEL * 1.8 + 0.1


def make_op(name: str, level: float, translate_const: float,
            cutout_const: float, replace=REPLACE_GRAY,
            solarize_wrap: bool = True, enhance_pixels: str = 'pil'
            ) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """Returns `op(image, seed)` for a named op at a level, upstream's mapping.

  The seed only drives the random sign of rotate/shear/translate and the
  position of cutout. `solarize_wrap`: see `solarize_threshold`;
  `enhance_pixels` (one of ENHANCE_PIXELS): see `contrast`, `sharpness`.
  """
  level = float(level)
  ratio = level / MAX_LEVEL
  if name == 'Identity':
    return lambda image, seed: image
  if name == 'AutoContrast':
    return lambda image, seed: autocontrast(image)
  if name == 'Equalize':
    return lambda image, seed: equalize(image)
  if name == 'Invert':
    return lambda image, seed: invert(image)
  if name == 'Rotate':
    return lambda image, seed: rotate(
        image, _random_sign(ratio * 30.0, seed), replace)
  if name == 'Posterize':
    return lambda image, seed: posterize(image, int(ratio * 4))
  if name == 'Solarize':
    threshold = solarize_threshold(level, solarize_wrap)
    return lambda image, seed: solarize(image, threshold)
  if name == 'SolarizeAdd':
    return lambda image, seed: solarize_add(image, int(ratio * 110))
  if name in ('Contrast', 'Sharpness'):
    fn = contrast if name == 'Contrast' else sharpness
    return lambda image, seed: fn(image, _enhance_factor(level),
                                  enhance_pixels)
  if name in ('Color', 'Brightness'):
    fn = color if name == 'Color' else brightness
    return lambda image, seed: fn(image, _enhance_factor(level))
  if name in ('ShearX', 'ShearY'):
    fn = shear_x if name == 'ShearX' else shear_y
    return lambda image, seed: fn(image, _random_sign(ratio * 0.3, seed),
                                  replace)
  if name in ('TranslateX', 'TranslateY'):
    fn = translate_x if name == 'TranslateX' else translate_y
    return lambda image, seed: fn(
        image, _random_sign(ratio * float(translate_const), seed), replace)
  if name == 'Cutout':
    return lambda image, seed: cutout(
        image, int(ratio * cutout_const), replace[0], seed)
  raise ValueError(registry.unknown_name_message('augmentation op', name,
                                                 VALID_RANDAUGMENT_OPS))


RANDAUGMENT_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize',
                   'Solarize', 'Color', 'Contrast', 'Brightness', 'Sharpness',
                   'ShearX', 'ShearY', 'TranslateX', 'TranslateY', 'Cutout',
                   'SolarizeAdd')
# Port addition, drawn only where `data.ra_ops` names it: a draw that leaves
# the image as it is (upstream always applies the op it draws), so listing it
# beside other ops lowers the share of augmented images; a name listed twice
# is drawn twice as often.
EXTRA_RANDAUGMENT_OPS = ('Identity',)
VALID_RANDAUGMENT_OPS = RANDAUGMENT_OPS + EXTRA_RANDAUGMENT_OPS


def policy_v0() -> List[List[Tuple[str, float, int]]]:
  """AutoAugment's ImageNet policy: 25 sub-policies of (op, prob, level)."""
  return [
      [('Equalize', 0.8, 1), ('ShearY', 0.8, 4)],
      [('Color', 0.4, 9), ('Equalize', 0.6, 3)],
      [('Color', 0.4, 1), ('Rotate', 0.6, 8)],
      [('Solarize', 0.8, 3), ('Equalize', 0.4, 7)],
      [('Solarize', 0.4, 2), ('Solarize', 0.6, 2)],
      [('Color', 0.2, 0), ('Equalize', 0.8, 8)],
      [('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)],
      [('ShearX', 0.2, 9), ('Rotate', 0.6, 8)],
      [('Color', 0.6, 1), ('Equalize', 1.0, 2)],
      [('Invert', 0.4, 9), ('Rotate', 0.6, 0)],
      [('Equalize', 1.0, 9), ('ShearY', 0.6, 3)],
      [('Color', 0.4, 7), ('Equalize', 0.6, 0)],
      [('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)],
      [('Solarize', 0.6, 8), ('Color', 0.6, 9)],
      [('Solarize', 0.2, 4), ('Rotate', 0.8, 9)],
      [('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)],
      [('ShearX', 0.0, 0), ('Solarize', 0.8, 4)],
      [('ShearY', 0.8, 0), ('Color', 0.6, 4)],
      [('Color', 1.0, 0), ('Rotate', 0.6, 2)],
      [('Equalize', 0.8, 4), ('Equalize', 0.0, 8)],
      [('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)],
      [('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)],
      [('Posterize', 0.8, 2), ('Solarize', 0.6, 10)],
      [('Solarize', 0.6, 8), ('Equalize', 0.6, 1)],
      [('Color', 0.8, 6), ('Rotate', 0.4, 5)],
  ]


def distort_image_with_autoaugment(image, seed, policy=None,
                                   translate_const=AUTOAUGMENT_CONSTS[0],
                                   cutout_const=AUTOAUGMENT_CONSTS[1],
                                   replace=REPLACE_GRAY, solarize_wrap=True,
                                   enhance_pixels='pil'):
  """Picks one sub-policy uniformly and applies each op with its probability."""
  policy = policy or policy_v0()
  choice_seed, ops_seed = split_seed(seed, 2)
  choice = tf.random.stateless_uniform([], choice_seed, 0, len(policy),
                                       tf.int32)

  def make_branch(sub_policy):
    def branch():
      out = image
      for i, (name, prob, level) in enumerate(sub_policy):
        gate_seed, op_seed = split_seed(
            tf.random.experimental.stateless_fold_in(ops_seed, i), 2)
        op = make_op(name, level, translate_const, cutout_const, replace,
                     solarize_wrap, enhance_pixels)
        out = tf.cond(_uniform(gate_seed) < prob,
                      lambda op=op, out=out: op(out, op_seed),
                      lambda out=out: out)
      return out
    return branch

  return tf.switch_case(choice, [make_branch(p) for p in policy])


def distort_image_with_randaugment(image, num_layers, magnitude, seed,
                                   translate_const=RANDAUGMENT_CONSTS[0],
                                   cutout_const=RANDAUGMENT_CONSTS[1],
                                   ops=RANDAUGMENT_OPS, replace=REPLACE_GRAY,
                                   solarize_wrap=True, enhance_pixels='pil'):
  """Applies `num_layers` ops, each drawn uniformly from `ops`, at `magnitude`.

  `ops` (names) and `replace` (the fill colour) are port additions; upstream
  always draws from its 16 and fills with gray. As upstream, the chosen op
  is always applied (its sampled probability is never used).
  """
  ops = [make_op(name, magnitude, translate_const, cutout_const, replace,
                 solarize_wrap, enhance_pixels)
         for name in ops]
  for layer in range(int(num_layers)):
    choice_seed, op_seed = split_seed(
        tf.random.experimental.stateless_fold_in(seed, layer), 2)
    choice = tf.random.stateless_uniform([], choice_seed, 0, len(ops),
                                         tf.int32)
    image = tf.switch_case(
        choice, [functools.partial(op, image, op_seed) for op in ops])
  return image


def distort_image(image, policy: str, spec, seed):
  """Upstream's dispatcher: 'autoaug', 'randaug' or 'ra_aa' (either, 50/50).

  `spec` (an augment_spec.AugmentSpec) gives RandAugment's layers,
  magnitude and ops, the pixel constants, the fill colour, Solarize's wrap
  and the Contrast and Sharpness pixels.
  """
  if policy == 'autoaug':
    return distort_image_with_autoaugment(
        image, seed, None, *spec.constants('autoaug'),
        replace=spec.fill_color, solarize_wrap=spec.solarize_wrap,
        enhance_pixels=spec.enhance_pixels)
  if policy == 'randaug':
    return distort_image_with_randaugment(
        image, spec.num_layers, spec.magnitude, seed,
        *spec.constants('randaug'), ops=spec.ops, replace=spec.fill_color,
        solarize_wrap=spec.solarize_wrap, enhance_pixels=spec.enhance_pixels)
  if policy == 'ra_aa':
    pick_seed, aug_seed = split_seed(seed, 2)
    return tf.cond(_uniform(pick_seed) < 0.5,
                   lambda: distort_image(image, 'autoaug', spec, aug_seed),
                   lambda: distort_image(image, 'randaug', spec, aug_seed))
  raise ValueError(registry.unknown_name_message(
      'augmentation', policy, ('autoaug', 'randaug', 'ra_aa')))
