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
  assert abs(model.count_params() / 1e6 - 5.3) < 0.05


def _bn_pair(momentum=0.9, channels=4):
  import keras
  keras_bn = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-3)
  fused_bn = effnetv2_model.FusedBatchNormalization(momentum=momentum,
                                                    epsilon=1e-3)
  for layer in (keras_bn, fused_bn):
    layer.build((None, 5, 5, channels))
    layer.gamma.assign(np.arange(1, channels + 1, dtype='float32'))
    layer.beta.assign(np.full(channels, 0.5, 'float32'))
  return keras_bn, fused_bn


def test_fused_batch_norm_trains_like_keras_with_unbiased_moving_variance():
  import tensorflow as tf
  keras_bn, fused_bn = _bn_pair(momentum=0.9)
  x = tf.constant(np.random.default_rng(0).normal(2, 3, (8, 5, 5, 4)),
                  tf.float32)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(x)
    want = keras_bn(x, training=True)
    got = fused_bn(x, training=True)
    loss_want = tf.reduce_sum(want * tf.range(4, dtype=tf.float32))
    loss_got = tf.reduce_sum(got * tf.range(4, dtype=tf.float32))
  np.testing.assert_allclose(got, want, atol=1e-5)
  for a, b in zip(tape.gradient(loss_got, [x, fused_bn.gamma, fused_bn.beta]),
                  tape.gradient(loss_want, [x, keras_bn.gamma, keras_bn.beta])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
  batch_mean = x.numpy().mean(axis=(0, 1, 2))
  np.testing.assert_allclose(fused_bn.moving_mean, 0.1 * batch_mean,
                             rtol=1e-5, atol=1e-6)
  n = 8 * 5 * 5  # The fused kernel (like upstream's TF2 BN) updates the
  # moving variance with the Bessel-corrected batch variance.
  unbiased = x.numpy().var(axis=(0, 1, 2)) * n / (n - 1)
  np.testing.assert_allclose(fused_bn.moving_variance, 0.9 + 0.1 * unbiased,
                             rtol=1e-5)
  assert not np.allclose(fused_bn.moving_variance, keras_bn.moving_variance)


def test_fused_batch_norm_inference_matches_keras_and_changes_nothing():
  keras_bn, fused_bn = _bn_pair()
  rng = np.random.default_rng(1)
  stats = [rng.normal(0, 1, 4).astype('float32'),
           rng.uniform(0.5, 2, 4).astype('float32')]
  for layer in (keras_bn, fused_bn):
    layer.moving_mean.assign(stats[0])
    layer.moving_variance.assign(stats[1])
  x = rng.normal(0, 2, (3, 5, 5, 4)).astype('float32')
  np.testing.assert_allclose(fused_bn(x, training=False),
                             keras_bn(x, training=False), atol=1e-5)
  np.testing.assert_array_equal(fused_bn.moving_mean, stats[0])
  np.testing.assert_array_equal(fused_bn.moving_variance, stats[1])


def test_fused_batch_norm_falls_back_where_the_kernel_cannot_run():
  import keras
  # The fused kernel's mark is the Bessel-corrected moving variance; where
  # it cannot run (a 3-D input, synchronized BN) the layer does Keras'
  # maths, biased moving variance included.
  rng = np.random.default_rng(2)
  cases = [(rng.normal(0, 1, (4, 3, 4)).astype('float32'), {}),
           (rng.normal(0, 1, (2, 3, 3, 4)).astype('float32'),
            {'synchronized': True})]
  for x, options in cases:
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, **options)
    fused_bn = effnetv2_model.FusedBatchNormalization(momentum=0.9,
                                                      **options)
    np.testing.assert_allclose(fused_bn(x, training=True),
                               keras_bn(x, training=True), atol=1e-5)
    np.testing.assert_allclose(fused_bn.moving_variance,
                               keras_bn.moving_variance, rtol=1e-6)
  # The same 4-D batch through the fused kernel does move differently.
  fused = effnetv2_model.FusedBatchNormalization(momentum=0.9)
  fused(cases[1][0], training=True)
  assert not np.allclose(fused.moving_variance, keras_bn.moving_variance,
                         rtol=1e-6)


def test_model_uses_fused_batch_norm_unless_synchronized():
  import keras

  def batch_norms(model):
    return [l for l in model.layers
            if isinstance(l, keras.layers.BatchNormalization)]

  plain = effnetv2_model.get_model('efficientnetv2-b0', model_config=TINY)
  synced = effnetv2_model.get_model(
      'efficientnetv2-b0', model_config=dict(TINY, bn_type='sync_bn'))
  assert batch_norms(plain) and all(
      type(l) is effnetv2_model.FusedBatchNormalization
      for l in batch_norms(plain))
  assert all(l.synchronized for l in batch_norms(synced))
  composed = effnetv2_model.get_model(
      'efficientnetv2-b0', model_config=dict(TINY, fused_bn=False))
  assert not any(isinstance(l, effnetv2_model.FusedBatchNormalization)
                 for l in composed.layers)


@pytest.mark.parametrize('height,width,kernel,strides', [
    (1, 1, 3, 1), (2, 2, 3, 1), (2, 3, 3, 2), (3, 3, 3, 2), (4, 4, 3, 2),
    (2, 2, 5, 1), (1, 2, 5, 1)])
def test_tap_depthwise_gradient_equals_keras_on_small_maps(
    height, width, kernel, strides):
  import keras
  import tensorflow as tf
  rng = np.random.default_rng(height * 10 + width + kernel + strides)
  x = tf.constant(rng.normal(size=(3, height, width, 6)).astype('float32'))
  ours = effnetv2_model.DepthwiseConv2D(kernel, strides=strides,
                                        padding='same', use_bias=True)
  ref = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding='same',
                                     use_bias=True)
  for layer in (ours, ref):
    layer.build(x.shape)
  ref.set_weights([rng.normal(size=w.shape).astype('float32')
                   for w in ref.weights])
  ours.set_weights(ref.get_weights())
  assert ours.uses_tap_grad(x)  # Output map at most 2x2.
  results = []
  for layer in (ours, ref):
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x)
      loss = tf.reduce_sum(tf.sin(y))
    results.append([y] + tape.gradient(loss, [x] + layer.trainable_weights))
  for got, want in zip(*results):
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_tap_depthwise_gradient_only_where_tf_kernel_is_slow():
  import tensorflow as tf
  layer = effnetv2_model.DepthwiseConv2D(3, padding='same')
  layer.build((None, 4, 4, 8))
  assert not layer.uses_tap_grad(tf.zeros((2, 4, 4, 8)))  # 4x4 output.
  assert layer.uses_tap_grad(tf.zeros((2, 2, 2, 8)))
  off = effnetv2_model.DepthwiseConv2D(3, padding='same', small_map_grad=False)
  off.build((None, 2, 2, 8))
  assert not off.uses_tap_grad(tf.zeros((2, 2, 2, 8)))
  valid = effnetv2_model.DepthwiseConv2D(3, padding='valid')
  valid.build((None, 3, 3, 8))
  assert not valid.uses_tap_grad(tf.zeros((2, 3, 3, 8)))


def test_model_gradients_do_not_depend_on_the_depthwise_gradient_path(
    monkeypatch):
  import tensorflow as tf
  tap_grads = []  # Output (height, width) of each tap-by-tap gradient taken.
  by_taps = effnetv2_model.depthwise_kernel_grad_by_taps

  def spy(inputs, grad_outputs, kernel_size, strides):
    tap_grads.append(tuple(grad_outputs.shape[1:3]))
    return by_taps(inputs, grad_outputs, kernel_size, strides)

  monkeypatch.setattr(effnetv2_model, 'depthwise_kernel_grad_by_taps', spy)
  models = [effnetv2_model.get_model(
      'efficientnetv2-b0',
      # No random layers, so both models compute the same function.
      model_config=dict(TINY, small_map_depthwise_grad=on, survival_prob=1.0,
                        dropout_rate=0.0)) for on in (True, False)]
  models[1].set_weights(models[0].get_weights())
  depthwise = [l for l in models[0].layers
               if isinstance(l, effnetv2_model.DepthwiseConv2D)]
  x = tf.constant(np.random.default_rng(3).normal(
      size=(4, 32, 32, 3)).astype('float32'))
  assert depthwise and all(
      not l.small_map_grad for l in models[1].layers
      if isinstance(l, effnetv2_model.DepthwiseConv2D))
  grads, taps_per_model = [], []
  for model in models:
    tap_grads.clear()
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.sin(model(x, training=True)))
    grads.append(tape.gradient(loss, model.trainable_weights))
    taps_per_model.append(list(tap_grads))
  # At 32 px B0's last two stages run on 2x2 and 1x1 maps: only the first
  # model takes the tap path there, and nowhere on a larger map.
  with_taps, without_taps = taps_per_model
  assert with_taps and all(h * w <= 4 for h, w in with_taps), with_taps
  assert not without_taps, without_taps
  for got, want in zip(*grads):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
