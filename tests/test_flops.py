"""Multiply-adds per image, counted on the built model (flops.py)."""
import keras
import pytest

from automl_effnetv2 import flops


def test_counts_of_small_layers_by_hand():
  # A 7x7x3 input; 'same' padding at stride 2 rounds 7 / 2 up to 4.
  inputs = keras.Input((7, 7, 3))
  x = keras.layers.Conv2D(8, 3, strides=2, padding='same')(inputs)
  x = keras.layers.DepthwiseConv2D(5, padding='same')(x)
  x = keras.layers.Conv2D(8, 1, groups=2)(x)
  x = keras.layers.BatchNormalization()(x)
  x = keras.layers.GlobalAveragePooling2D()(x)
  outputs = keras.layers.Dense(10)(x)
  model = keras.Model(inputs, outputs)
  conv = 4 * 4 * 8 * 3 * 3 * 3
  depthwise = 4 * 4 * 8 * 5 * 5
  grouped = 4 * 4 * 8 * 1 * 1 * 8 // 2
  dense = 8 * 10
  assert flops.model_multiply_adds(model) == conv + depthwise + grouped + dense


def test_b0_at_224_px_matches_the_published_072_gflops():
  counts = flops.multiply_adds_per_image('efficientnetv2-b0', [224])
  assert counts['224'] == pytest.approx(0.72e9, rel=0.01)


def test_small_maps_cost_more_than_their_pixels():
  # 28 px has 0.19 of 64 px's pixels; odd maps rounded up by the stride-2
  # padding make its arithmetic a larger share.
  counts = flops.multiply_adds_per_image('efficientnetv2-b0', [28, 64],
                                         {'num_classes': 10})
  ratio = counts['28'] / counts['64']
  assert (28 / 64) ** 2 < ratio < 0.3
