"""EfficientNet V1/V2 networks in Keras 3, built from `effnetv2_configs`.

[1] Tan & Le, EfficientNet: Rethinking Model Scaling for CNNs, ICML 2019.
[2] Tan & Le, EfficientNetV2: Smaller Models and Faster Training, ICML 2021.

The graph follows upstream's effnetv2_model.py (google/automl a6bb1ff):
stem, MBConv / fused MBConv blocks with squeeze-excite and stochastic depth,
head. Initializers, BN settings and filter/repeat rounding are upstream's.

Two things differ in form, not in numbers (docs/deviations.md):
- The model is a functional Keras model taking any image size (H, W >= 32),
  returning logits only (upstream also returned reduction endpoints).
- The head dropout rate and the stochastic-depth survival probability live in
  `tf.Variable`s outside Keras' weights, so progressive learning can change
  them between stages without rebuilding or retracing the model, while
  `count_params()` stays upstream's.
Two layers keep Keras' weights but pick faster kernels on CPU:
`FusedBatchNormalization` and `DepthwiseConv2D` (its kernel gradient on
small maps).
"""
import copy
import math
import sys
from typing import Optional

import keras
import tensorflow as tf

from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import hparams
from automl_effnetv2 import utils


class ConvKernelInitializer(keras.initializers.Initializer):
  """normal(0, sqrt(2 / fan_out)), fan_out = kh * kw * out_channels.

  Upstream uses an untruncated normal here, unlike Keras' VarianceScaling.
  """

  def __call__(self, shape, dtype=None):
    kernel_height, kernel_width, _, out_filters = shape
    fan_out = int(kernel_height * kernel_width * out_filters)
    return keras.random.normal(
        shape, mean=0.0, stddev=math.sqrt(2.0 / fan_out), dtype=dtype)


class DenseKernelInitializer(keras.initializers.Initializer):
  """uniform(-1/sqrt(units), 1/sqrt(units)), as upstream."""

  def __call__(self, shape, dtype=None):
    init_range = 1.0 / math.sqrt(shape[1])
    return keras.random.uniform(
        shape, minval=-init_range, maxval=init_range, dtype=dtype)


class FusedBatchNormalization(keras.layers.BatchNormalization):
  """Keras' BatchNormalization computed by TensorFlow's fused kernel.

  Upstream's TF2 Keras BatchNormalization ran the fused kernel whenever it
  could; Keras 3 always composes moments and normalization from small ops,
  which costs a lot of the step time on CPU (docs/benchmarks.md). Same
  weights, names and inference maths as the Keras layer; in training the
  moving variance is updated with the batch variance corrected by
  n / (n - 1), as the fused kernel (and therefore upstream) does. Anything
  the fused kernel cannot take (masks, renorm, synchronized statistics,
  non-4D inputs, other axes or dtypes) goes through Keras' own layer.
  """

  _FUSED_DTYPES = ('float32', 'float16', 'bfloat16')

  def _can_fuse(self, inputs, mask):
    return (mask is None and not self.renorm and not self.synchronized and
            self.scale and self.center and len(inputs.shape) == 4 and
            self.axis in (-1, 3) and
            keras.backend.standardize_dtype(inputs.dtype) in self._FUSED_DTYPES)

  def call(self, inputs, training=None, mask=None):
    if not self._can_fuse(inputs, mask) or not isinstance(
        training, (bool, type(None))):
      return super().call(inputs, training=training, mask=mask)
    is_training = bool(training) and self.trainable
    outputs, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs, scale=tf.cast(self.gamma, tf.float32),
        offset=tf.cast(self.beta, tf.float32),
        mean=tf.cast(self.moving_mean, tf.float32),
        variance=tf.cast(self.moving_variance, tf.float32),
        epsilon=self.epsilon,
        # With is_training and a factor below 1, the kernel returns the
        # updated moving averages rather than the batch moments.
        exponential_avg_factor=1.0 - self.momentum if is_training else 1.0,
        data_format='NHWC', is_training=is_training)
    if is_training:
      self.moving_mean.assign(mean)
      self.moving_variance.assign(variance)
    return tf.cast(outputs, self.compute_dtype)


TPU_BN_MAX_GROUP_SIZE = 8  # upstream: statistics over at most 8 replicas


def replica_groups(num_replicas: int,
                   max_group_size: int = TPU_BN_MAX_GROUP_SIZE):
  """Upstream's tpu_bn group assignment: consecutive replicas in groups of
  min(max_group_size, num_replicas); a count that does not divide is an
  error, as upstream's cross_replica_mean."""
  size = min(max_group_size, num_replicas)
  if size < 1 or num_replicas % size:
    raise ValueError(f'{num_replicas} replicas do not split into groups of '
                     f'{size} for tpu_bn; use a multiple of {size} replicas '
                     "or model.bn_type='sync_bn'")
  return [list(range(start, start + size))
          for start in range(0, num_replicas, size)]


def grouped_replica_mean(value, replica_id, groups, all_reduce_sum):
  """The mean of `value` over the replicas of `replica_id`'s group.

  `all_reduce_sum` sums a tensor over all replicas. With several groups each
  replica sends its value in its group's row of a [groups, ...] tensor, so
  one sum over all replicas yields every group's sum.
  """
  size = len(groups[0])
  if len(groups) == 1:
    return all_reduce_sum(value) / size
  group = replica_id // size
  rows = tf.one_hot(group, len(groups), dtype=value.dtype)
  rows = tf.reshape(rows, [len(groups)] + [1] * len(value.shape))
  return tf.gather(all_reduce_sum(rows * value[None]), group) / size


class TpuBatchNormalization(keras.layers.BatchNormalization):
  """Upstream's `tpu_bn`: batch statistics averaged over groups of replicas.

  Each replica's mean and E[x^2] are averaged over groups of at most 8
  consecutive replicas (`replica_groups`), and the variance is
  E[x^2] - E[x]^2 of the group, as upstream's utils.TpuBatchNormalization.
  Like upstream's (which cannot be fused), the moving variance takes this
  biased variance. On TPU the group sums are TPU's grouped cross-replica sum;
  under other strategies one all-reduce (`grouped_replica_mean`). Outside a
  multi-replica context it is plain batch normalization.
  """

  def _moments(self, inputs, mask):
    mean, variance = super()._moments(inputs, mask)
    context = tf.distribute.get_replica_context()
    num_replicas = context.num_replicas_in_sync if context else 1
    if num_replicas <= 1:
      return mean, variance
    groups = replica_groups(num_replicas)
    if isinstance(context.strategy, tf.distribute.TPUStrategy):
      size = len(groups[0])
      group_mean = lambda t: tf.compat.v1.tpu.cross_replica_sum(  # pylint: disable=g-long-lambda
          t, groups if len(groups) > 1 else None) / size
    else:
      replica_id = context.replica_id_in_sync_group
      group_mean = lambda t: grouped_replica_mean(  # pylint: disable=g-long-lambda
          t, replica_id, groups,
          lambda x: context.all_reduce(tf.distribute.ReduceOp.SUM, x))
    return group_moments(mean, variance, group_mean)


def group_moments(shard_mean, shard_variance, group_mean):
  """(mean, variance) of a group from each member's own moments:
  Var = E[x^2] - E[x]^2 with both expectations averaged by `group_mean`."""
  mean_of_square = shard_variance + tf.square(shard_mean)
  mean = group_mean(shard_mean)
  return mean, group_mean(mean_of_square) - tf.square(mean)


# model.bn_type: None is batch normalization (tpu_bn on a TPU); see norm().
BN_TYPES = (None, 'tpu_bn', 'sync_bn', 'gn')


def bn_type_for(bn_type, on_tpu: bool):
  """Upstream's main.py switches to the cross-replica BN on TPU unless the
  config names a normalization."""
  return bn_type or ('tpu_bn' if on_tpu else None)


def depthwise_kernel_grad_by_taps(inputs, grad_outputs, kernel_size: int,
                                  strides: int):
  """The kernel gradient of a 'same'-padded depthwise conv, one tap at a time.

  For tap (i, j) it is the sum over batch and positions of the input pixel
  that tap reads times the output gradient, so each tap is one elementwise
  product and reduction; taps that only ever read padding get zeros without
  any work. Needs static spatial shapes. Returns [k, k, channels, 1].
  """
  height, width = inputs.shape[1], inputs.shape[2]
  out_height, out_width = grad_outputs.shape[1], grad_outputs.shape[2]
  k, s = kernel_size, strides
  pad_top = max((out_height - 1) * s + k - height, 0) // 2
  pad_left = max((out_width - 1) * s + k - width, 0) // 2

  def reads_input(offset, out_size, in_size):
    """Output positions whose tap at `offset` lands inside the input."""
    return [o for o in range(out_size) if 0 <= o * s + offset < in_size]

  taps = []
  for i in range(k):
    rows = reads_input(i - pad_top, out_height, height)
    for j in range(k):
      cols = reads_input(j - pad_left, out_width, width)
      if not rows or not cols:
        taps.append(tf.zeros(inputs.shape[-1:], inputs.dtype))
        continue
      r0, r1, c0, c1 = rows[0], rows[-1], cols[0], cols[-1]
      read = inputs[:, r0 * s + i - pad_top:r1 * s + i - pad_top + 1:s,
                    c0 * s + j - pad_left:c1 * s + j - pad_left + 1:s, :]
      taps.append(tf.reduce_sum(
          read * grad_outputs[:, r0:r1 + 1, c0:c1 + 1, :], axis=[0, 1, 2]))
  return tf.reshape(tf.stack(taps), [k, k, -1, 1])


class DepthwiseConv2D(keras.layers.DepthwiseConv2D):
  """Keras' DepthwiseConv2D, with a faster kernel gradient on small maps on CPU.

  TensorFlow's CPU kernel for the depthwise kernel gradient is slow when the
  output map is tiny (2x2 or 1x1, as in EfficientNet's last stages at 32-64
  px): in docs/benchmarks.md it is the largest single op type of the step.
  There this layer computes that gradient tap by tap
  (`depthwise_kernel_grad_by_taps`); the forward pass and the input gradient
  stay TensorFlow's kernels. Same maths and weights; only the summation order
  of the kernel gradient differs. Elsewhere (larger maps, GPU/TPU, or
  `small_map_grad=False`) it is exactly Keras' layer.
  """

  MAX_OUTPUT_PIXELS = 4  # 2x2; at 4x4 TF's kernel was faster (benchmarks.md)

  def __init__(self, *args, small_map_grad=True, **kwargs):
    super().__init__(*args, **kwargs)
    self.small_map_grad = small_map_grad

  def build(self, input_shape):
    super().build(input_shape)
    self._on_cpu = utils.detect_device_kind() == 'CPU'

  def uses_tap_grad(self, inputs) -> bool:
    """Whether a call on `inputs` takes the tap-by-tap kernel gradient."""
    height, width = inputs.shape[1], inputs.shape[2]
    if not (self.small_map_grad and self._on_cpu and height and width):
      return False
    if (self.padding != 'same' or self.data_format != 'channels_last' or
        self.depth_multiplier != 1 or tuple(self.dilation_rate) != (1, 1) or
        self.strides[0] != self.strides[1] or
        self.kernel_size[0] != self.kernel_size[1]):
      return False
    s = self.strides[0]
    return (-(-height // s)) * (-(-width // s)) <= self.MAX_OUTPUT_PIXELS

  def call(self, inputs):
    if not self.uses_tap_grad(inputs):
      return super().call(inputs)
    k, s = self.kernel_size[0], self.strides[0]
    strides = [1, s, s, 1]

    @tf.custom_gradient
    def depthwise(x, kernel):
      def grad(dy):
        dx = tf.nn.depthwise_conv2d_backprop_input(
            tf.shape(x), kernel, dy, strides, 'SAME')
        return dx, depthwise_kernel_grad_by_taps(x, dy, k, s)
      return tf.nn.depthwise_conv2d(x, kernel, strides, 'SAME'), grad

    outputs = depthwise(inputs, tf.cast(self.kernel, inputs.dtype))
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs

  def get_config(self):
    return dict(super().get_config(), small_map_grad=self.small_map_grad)


def _schedule_variable(value, name):
  """A float32 scalar that a stage can rewrite without retracing the model.

  A plain `tf.Variable`, not a Keras weight: Keras leaves it out of
  `count_params()`, `summary()` and weight files, so parameter counts are
  upstream's, while `tf.train.Checkpoint` still saves it with the layer that
  holds it (under the attribute name, as when it was a Keras weight).
  """
  return tf.Variable(float(value), trainable=False, dtype=tf.float32,
                     name=name)


class StochasticDepth(keras.layers.Layer):
  """Drops the residual branch per example with probability 1 - survival_prob.

  Kept branches are divided by survival_prob at training time (upstream's
  drop_connect), so inference is the identity. The probability is a
  schedule variable that `EffNetV2Model.set_survival_prob` rewrites.
  """

  def __init__(self, survival_prob=1.0, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.survival_prob = _schedule_variable(survival_prob, 'survival_prob')
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, inputs, training=None):
    if not training:
      return inputs
    prob = tf.cast(self.survival_prob, inputs.dtype)
    batch = tf.shape(inputs)[0]
    noise = keras.random.uniform(
        (batch, 1, 1, 1), seed=self.seed_generator, dtype=inputs.dtype)
    keep = tf.floor(prob + noise)
    return inputs / prob * keep

  def get_config(self):
    return dict(super().get_config(),
                survival_prob=float(self.survival_prob.numpy()))


class ScheduledDropout(keras.layers.Layer):
  """Dropout whose rate is a schedule variable (rate 0 is the identity)."""

  def __init__(self, rate=0.0, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.rate = _schedule_variable(rate, 'rate')
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, inputs, training=None):
    if not training:
      return inputs
    keep_prob = 1.0 - tf.cast(self.rate, inputs.dtype)
    noise = keras.random.uniform(
        tf.shape(inputs), seed=self.seed_generator, dtype=inputs.dtype)
    return inputs / keep_prob * tf.floor(keep_prob + noise)

  def get_config(self):
    return dict(super().get_config(), rate=float(self.rate.numpy()))


def round_filters(filters: int, mconfig, skip: bool = False) -> int:
  """Scales a filter count by the width coefficient, rounded to the divisor."""
  multiplier = mconfig.width_coefficient
  divisor = mconfig.depth_divisor
  if skip or not multiplier:
    return filters
  filters *= multiplier
  min_depth = mconfig.min_depth or divisor
  return int(max(min_depth, int(filters + divisor / 2) // divisor * divisor))


def round_repeats(repeats: int, multiplier, skip: bool = False) -> int:
  """Scales a repeat count by the depth coefficient, rounding up."""
  if skip or not multiplier:
    return repeats
  return int(math.ceil(multiplier * repeats))


def expand_block_args(mconfig):
  """All blocks of the network, one BlockArgs each, with rounding applied."""
  blocks = []
  for stage in effnetv2_configs.decode(mconfig.blocks_args):
    if stage.num_repeat <= 0:
      raise ValueError(f'block {stage} must repeat at least once')
    first = effnetv2_configs.BlockArgs(
        num_repeat=1, kernel_size=stage.kernel_size, strides=stage.strides,
        expand_ratio=stage.expand_ratio,
        input_filters=round_filters(stage.input_filters, mconfig),
        output_filters=round_filters(stage.output_filters, mconfig),
        se_ratio=stage.se_ratio, conv_type=stage.conv_type)
    repeats = round_repeats(stage.num_repeat, mconfig.depth_coefficient)
    blocks.append(first)
    rest = effnetv2_configs.BlockArgs(
        num_repeat=1, kernel_size=first.kernel_size, strides=1,
        expand_ratio=first.expand_ratio,
        input_filters=first.output_filters,
        output_filters=first.output_filters,
        se_ratio=first.se_ratio, conv_type=first.conv_type)
    blocks.extend([rest] * (repeats - 1))
  return blocks


def block_survival_prob(survival_prob, block_index: int, num_blocks: int):
  """Upstream's linear decay: 1 - (1 - p) * i / N for block i of N."""
  if not survival_prob:
    return 1.0
  return 1.0 - (1.0 - survival_prob) * float(block_index) / num_blocks


class _Builder:
  """Creates layers with upstream's settings; one method per building block."""

  def __init__(self, mconfig):
    self.mconfig = mconfig
    self.act = utils.get_act_fn(mconfig.act_fn)
    if mconfig.data_format not in (None, 'channels_last'):
      raise ValueError(
          f"data_format {mconfig.data_format!r} is not supported: this port "
          "is channels_last only (set model.data_format=channels_last)")

  def conv(self, filters, kernel_size, strides=1, use_bias=False, name=None):
    return keras.layers.Conv2D(
        filters, kernel_size, strides=strides, padding='same',
        use_bias=use_bias, kernel_initializer=ConvKernelInitializer(),
        name=name)

  def norm(self, name):
    m = self.mconfig
    bn_type = m.bn_type
    if bn_type == 'gn':
      return keras.layers.GroupNormalization(
          groups=m.gn_groups, epsilon=m.bn_epsilon, name=name)
    if bn_type == 'tpu_bn':
      return TpuBatchNormalization(
          momentum=m.bn_momentum, epsilon=m.bn_epsilon, name=name)
    layer = (FusedBatchNormalization if m.get('fused_bn', True)
             else keras.layers.BatchNormalization)
    return layer(
        momentum=m.bn_momentum, epsilon=m.bn_epsilon,
        synchronized=bn_type == 'sync_bn', name=name)

  def activation(self, x, name):
    return keras.layers.Activation(self.act, name=name)(x)

  def squeeze_excite(self, x, block: effnetv2_configs.BlockArgs, name):
    filters = x.shape[-1]
    se_filters = max(1, int(block.input_filters * block.se_ratio))
    se = keras.layers.GlobalAveragePooling2D(
        keepdims=True, name=name + '_se_squeeze')(x)
    se = self.conv(se_filters, 1, use_bias=True, name=name + '_se_reduce')(se)
    se = self.activation(se, name + '_se_act')
    se = self.conv(filters, 1, use_bias=True, name=name + '_se_expand')(se)
    se = keras.layers.Activation('sigmoid', name=name + '_se_gate')(se)
    return keras.layers.Multiply(name=name + '_se_excite')([x, se])

  def residual(self, inputs, x, block, survival_prob, name):
    if block.strides == 1 and block.input_filters == block.output_filters:
      x = StochasticDepth(survival_prob, name=name + '_drop')(x)
      x = keras.layers.Add(name=name + '_add')([x, inputs])
    return x

  def conv_dropout(self, x, block, name):
    if self.mconfig.conv_dropout and block.expand_ratio > 1:
      x = keras.layers.Dropout(self.mconfig.conv_dropout,
                               name=name + '_conv_dropout')(x)
    return x

  def mbconv(self, inputs, block, survival_prob, name):
    """Inverted bottleneck: 1x1 expand, depthwise, SE, 1x1 project."""
    x = inputs
    filters = block.input_filters * block.expand_ratio
    if block.expand_ratio != 1:
      x = self.conv(filters, 1, name=name + '_expand_conv')(x)
      x = self.norm(name + '_expand_bn')(x)
      x = self.activation(x, name + '_expand_act')
    x = DepthwiseConv2D(
        block.kernel_size, strides=block.strides, padding='same',
        use_bias=False, depthwise_initializer=ConvKernelInitializer(),
        small_map_grad=self.mconfig.get('small_map_depthwise_grad', True),
        name=name + '_dwconv')(x)
    x = self.norm(name + '_bn')(x)
    x = self.activation(x, name + '_act')
    x = self.conv_dropout(x, block, name)
    if block.has_se:
      x = self.squeeze_excite(x, block, name)
    x = self.conv(block.output_filters, 1, name=name + '_project_conv')(x)
    x = self.norm(name + '_project_bn')(x)
    return self.residual(inputs, x, block, survival_prob, name)

  def fused_mbconv(self, inputs, block, survival_prob, name):
    """Fused: one k x k strided expand conv replaces 1x1 expand + depthwise."""
    x = inputs
    filters = block.input_filters * block.expand_ratio
    if block.expand_ratio != 1:
      x = self.conv(filters, block.kernel_size, strides=block.strides,
                    name=name + '_expand_conv')(x)
      x = self.norm(name + '_expand_bn')(x)
      x = self.activation(x, name + '_expand_act')
    x = self.conv_dropout(x, block, name)
    if block.has_se:
      x = self.squeeze_excite(x, block, name)
    no_expansion = block.expand_ratio == 1
    x = self.conv(block.output_filters,
                  block.kernel_size if no_expansion else 1,
                  strides=block.strides if no_expansion else 1,
                  name=name + '_project_conv')(x)
    x = self.norm(name + '_project_bn')(x)
    if no_expansion:  # Upstream activates the projection only without expansion.
      x = self.activation(x, name + '_project_act')
    return self.residual(inputs, x, block, survival_prob, name)


class EffNetV2Model(keras.Model):
  """An EfficientNet V1/V2 classifier producing float32 logits.

  Args:
    model_name: a name from `effnetv2_configs.model_names()`, or None to use
      `model_config` alone.
    model_config: dict, Config or 'k=v' string overriding the `model` section
      (e.g. `{'num_classes': 10, 'width_coefficient': 0.5}`).
    input_shape: (H, W, 3); None dimensions accept any size >= 32.
    name: Keras model name (defaults to the model name).
  """

  def __init__(self, model_name: Optional[str] = 'efficientnetv2-s',
               model_config=None, input_shape=(None, None, 3), name=None):
    cfg = copy.deepcopy(hparams.base_config)
    if model_name:
      cfg.override(effnetv2_configs.get_model_config(model_name))
    cfg.model.override(model_config)
    mconfig = cfg.model
    if not mconfig.blocks_args:
      raise ValueError('model.blocks_args is empty: pass a model_name or '
                       'blocks_args in model_config')
    builder = _Builder(mconfig)
    blocks = expand_block_args(mconfig)

    inputs = keras.Input(shape=input_shape, name='images')
    x = builder.conv(round_filters(blocks[0].input_filters, mconfig, skip=True),
                     3, strides=2, name='stem_conv')(inputs)
    x = builder.norm('stem_bn')(x)
    x = builder.activation(x, 'stem_act')

    for index, block in enumerate(blocks):
      prob = block_survival_prob(mconfig.survival_prob, index, len(blocks))
      make = builder.fused_mbconv if block.fused else builder.mbconv
      x = make(x, block, prob, name=f'blocks_{index}')

    x = builder.conv(round_filters(mconfig.feature_size or 1280, mconfig), 1,
                     name='head_conv')(x)
    x = builder.norm('head_bn')(x)
    x = builder.activation(x, 'head_act')
    x = keras.layers.GlobalAveragePooling2D(name='head_pool')(x)
    x = ScheduledDropout(mconfig.dropout_rate or 0.0, name='head_dropout')(x)
    if mconfig.num_classes:
      x = keras.layers.Dense(
          mconfig.num_classes, kernel_initializer=DenseKernelInitializer(),
          bias_initializer=keras.initializers.Constant(mconfig.headbias or 0),
          name='head_dense')(x)
    outputs = keras.layers.Activation('linear', dtype='float32',
                                      name='logits')(x)
    # Keras walks the functional graph recursively, one frame per layer; XL
    # has about 1,900 layers, beyond Python's default limit of 1,000.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20000))
    super().__init__(inputs=inputs, outputs=outputs,
                     name=name or mconfig.model_name)
    self.cfg = cfg
    self.mconfig = mconfig
    self.num_blocks = len(blocks)

  # -- per-stage regularization ----------------------------------------------
  def set_dropout_rate(self, rate):
    """Sets the head dropout rate (None or 0 switches it off)."""
    rate = float(rate or 0.0)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f'dropout rate must be in [0, 1), got {rate}')
    self.get_layer('head_dropout').rate.assign(rate)

  def set_survival_prob(self, survival_prob):
    """Sets the stochastic-depth base probability; block i gets upstream's
    1 - (1 - p) * i / N. None or 0 switches stochastic depth off."""
    if survival_prob and not 0.0 < survival_prob <= 1.0:
      raise ValueError(f'survival_prob must be in (0, 1], got {survival_prob}')
    for index in range(self.num_blocks):
      name = f'blocks_{index}_drop'
      if name in self._layer_names():
        self.get_layer(name).survival_prob.assign(
            block_survival_prob(survival_prob, index, self.num_blocks))

  @property
  def dropout_rate(self) -> float:
    return float(self.get_layer('head_dropout').rate.numpy())

  def block_survival_probs(self):
    return {layer.name: float(layer.survival_prob.numpy())
            for layer in self.layers if isinstance(layer, StochasticDepth)}

  def _layer_names(self):
    return {layer.name for layer in self.layers}


def get_model(model_name: str, num_classes: Optional[int] = None,
              model_config=None) -> EffNetV2Model:
  """Convenience builder: a named variant with an optional class count."""
  overrides = hparams.Config()
  if model_config is not None:
    overrides.update(model_config if not isinstance(model_config, str) else
                     hparams.parse_hparam_str(model_config))
  if num_classes is not None:
    overrides.update({'num_classes': num_classes})
  return EffNetV2Model(model_name, overrides.as_dict())
