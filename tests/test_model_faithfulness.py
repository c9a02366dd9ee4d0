"""The port computes what keras.applications' EfficientNetV2 computes.

keras.applications.EfficientNetV2* reproduces upstream's architectures (its
author checked outputs against upstream), so it is the numeric oracle: equal
parameter counts, and equal logits once the weights are copied one to one.
"""
import keras
import numpy as np
import pytest

from automl_effnetv2 import effnetv2_model

KERAS_VARIANTS = {
    'efficientnetv2-b0': keras.applications.EfficientNetV2B0,
    'efficientnetv2-b1': keras.applications.EfficientNetV2B1,
    'efficientnetv2-b2': keras.applications.EfficientNetV2B2,
    'efficientnetv2-b3': keras.applications.EfficientNetV2B3,
    'efficientnetv2-s': keras.applications.EfficientNetV2S,
    'efficientnetv2-m': keras.applications.EfficientNetV2M,
    'efficientnetv2-l': keras.applications.EfficientNetV2L,
}
WEIGHTED = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D,
            keras.layers.BatchNormalization, keras.layers.Dense)


def _weighted_layers(model):
  return [layer for layer in model.layers if isinstance(layer, WEIGHTED)]


def _randomize_bn_statistics(model, rng):
  """Non-trivial moving statistics, so BN inference is really exercised."""
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.moving_mean.assign(
          rng.normal(0, 0.1, layer.moving_mean.shape).astype('float32'))
      layer.moving_variance.assign(
          rng.uniform(0.5, 1.5, layer.moving_variance.shape).astype('float32'))


def _copy_weights(source, dest):
  dest_layers, source_layers = _weighted_layers(dest), _weighted_layers(source)
  assert len(dest_layers) == len(source_layers)
  for mine, reference in zip(dest_layers, source_layers):
    # Same layer kind (our fused BN is a subclass of Keras' BN).
    assert isinstance(mine, type(reference)), (mine.name, reference.name)
    mine.set_weights(reference.get_weights())  # Raises on any shape mismatch.


def _logits_of_both(name, fused_bn):
  """(ours, reference) logits on one random batch, weights copied over."""
  ours = effnetv2_model.get_model(name, num_classes=1000,
                                  model_config={'fused_bn': fused_bn})
  theirs = KERAS_VARIANTS[name](
      include_preprocessing=False, weights=None, classes=1000,
      input_shape=(64, 64, 3), classifier_activation=None)
  assert ours.count_params() == theirs.count_params()
  rng = np.random.default_rng(0)
  _randomize_bn_statistics(theirs, rng)
  _copy_weights(theirs, ours)
  images = rng.uniform(-1, 1, (2, 64, 64, 3)).astype('float32')
  expected = theirs(images, training=False).numpy()
  got = ours(images, training=False).numpy()
  assert got.shape == (2, 1000)
  assert expected.std() > 1e-3  # The comparison is not between two zeros.
  return got, expected


@pytest.mark.parametrize('name', sorted(KERAS_VARIANTS))
def test_matches_keras_applications(name):
  # The architecture check runs both on Keras' BN ops: untrained deep
  # variants with random BN statistics are chaotic (logits up to 1e9), so
  # any kernel difference, however small, is amplified. The fused kernel is
  # compared with Keras' BN layer by layer in test_model.py and end to end
  # on B0 below.
  got, expected = _logits_of_both(name, fused_bn=False)
  np.testing.assert_array_less(np.abs(got - expected).max(), 1e-4)


def test_fused_batch_norm_model_matches_keras_applications_b0():
  got, expected = _logits_of_both('efficientnetv2-b0', fused_bn=True)
  np.testing.assert_allclose(got, expected, rtol=1e-3,
                             atol=1e-3 * np.abs(expected).max())

