"""Model behaviour beyond the architecture: sizes, schedules, regularization."""
import numpy as np
import pytest

from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import hparams

TINY = {'width_coefficient': 0.25, 'depth_coefficient': 0.25,
        'num_classes': 10, 'feature_size': 64}


@pytest.fixture(scope='module')
def tiny_model():
  return effnetv2_model.get_model('efficientnetv2-s', model_config=TINY)


@pytest.mark.parametrize('size', [32, 48, 97, 128])
def test_one_built_model_accepts_any_image_size(tiny_model, size):
  out = tiny_model(np.zeros((2, size, size, 3), 'float32'), training=False)
  assert out.shape == (2, 10)


def test_rounding_of_filters_and_repeats():
  cfg = hparams.Config(width_coefficient=1.1, depth_divisor=8, min_depth=8)
  assert effnetv2_model.round_filters(32, cfg) == 32  # 35.2 -> 32
  assert effnetv2_model.round_filters(112, cfg) == 120  # 123.2 -> 120
  assert effnetv2_model.round_repeats(3, 1.4) == 5  # ceil(4.2)


def test_block_survival_probability_decays_linearly():
  probs = [effnetv2_model.block_survival_prob(0.8, i, 10) for i in range(10)]
  np.testing.assert_allclose(probs, [1 - 0.2 * i / 10 for i in range(10)])
  assert effnetv2_model.block_survival_prob(None, 5, 10) == 1.0


def test_survival_probabilities_are_set_per_block(tiny_model):
  tiny_model.set_survival_prob(0.5)
  probs = tiny_model.block_survival_probs()
  n = tiny_model.num_blocks
  for name, prob in probs.items():
    index = int(name.split('_')[1])
    assert prob == pytest.approx(1 - 0.5 * index / n)
  tiny_model.set_survival_prob(0.8)


def test_dropout_rate_changes_training_output_without_rebuilding(tiny_model):
  images = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype('f4')
  tiny_model.set_survival_prob(None)  # Isolate the head dropout.
  tiny_model.set_dropout_rate(0.0)
  no_dropout = tiny_model(images, training=True).numpy()
  again_no_dropout = tiny_model(images, training=True).numpy()
  tiny_model.set_dropout_rate(0.5)
  with_dropout = tiny_model(images, training=True).numpy()
  assert tiny_model.dropout_rate == 0.5
  # Training-mode outputs depend on the batch alone without dropout ...
  np.testing.assert_allclose(no_dropout, again_no_dropout, atol=1e-5)
  assert not np.allclose(no_dropout, with_dropout, atol=1e-3)
  # ... and inference ignores the rate.
  inference_with_rate = tiny_model(images, training=False).numpy()
  tiny_model.set_dropout_rate(0.0)
  np.testing.assert_array_equal(
      tiny_model(images, training=False).numpy(), inference_with_rate)
  tiny_model.set_survival_prob(0.8)


def test_stochastic_depth_keeps_expectation():
  layer = effnetv2_model.StochasticDepth(0.75)
  x = np.ones((20000, 1, 1, 1), 'float32')
  y = layer(x, training=True).numpy()
  np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.75], rtol=1e-6)
  assert y.mean() == pytest.approx(1.0, abs=0.03)
  np.testing.assert_array_equal(layer(x, training=False).numpy(), x)


def test_initializers_follow_upstream():
  conv = effnetv2_model.ConvKernelInitializer()((3, 3, 64, 256)).numpy()
  assert conv.std() == pytest.approx(np.sqrt(2.0 / (3 * 3 * 256)), rel=0.02)
  dense = effnetv2_model.DenseKernelInitializer()((1280, 1000)).numpy()
  assert np.abs(dense).max() <= 1 / np.sqrt(1000)
  assert dense.std() == pytest.approx(1 / np.sqrt(1000) / np.sqrt(3), rel=0.02)


def test_unknown_model_name_is_a_clear_error():
  with pytest.raises(hparams.ConfigError, match='valid: .*efficientnetv2-b0'):
    effnetv2_model.get_model('effnetv2-s')


def test_unknown_model_key_is_a_clear_error():
  with pytest.raises(hparams.ConfigError, match='width_coefficient'):
    effnetv2_model.get_model('efficientnetv2-b0',
                             model_config={'width_coeficient': 1.0})


def test_v1_model_builds_with_mbconv_only():
  model = effnetv2_model.get_model('efficientnet-b0', num_classes=1000)
  # EfficientNet-B0 has 5.3M parameters (Tan & Le 2019, Table 2).
  assert abs(effnetv2_model.count_params(model) / 1e6 - 5.3) < 0.05
