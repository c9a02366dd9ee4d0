"""Training utilities: activations, learning rate, optimizers, EMA, precision.

Formulas are upstream's (utils.py and main.py at google/automl a6bb1ff); the
TF1 pieces (tf.compat.v1 optimizers, ExponentialMovingAverage, estimator
hooks) are rewritten for TF2 / Keras 3.
"""
import math
import re
from typing import Callable, List

import keras
import numpy as np
import tensorflow as tf

from automl_effnetv2 import registry


# -- activations ----------------------------------------------------------
def _hswish(x):
  return x * tf.nn.relu6(x + 3.0) / 6.0


def _mish(x):
  return x * tf.math.tanh(tf.math.softplus(x))


_ACTIVATIONS = {
    'silu': tf.nn.silu,
    'swish': tf.nn.silu,
    'silu_native': lambda x: x * tf.sigmoid(x),
    'hswish': _hswish,
    'relu': tf.nn.relu,
    'relu6': tf.nn.relu6,
    'elu': tf.nn.elu,
    'leaky_relu': tf.nn.leaky_relu,
    'selu': tf.nn.selu,
    'mish': _mish,
}


ACTIVATIONS = tuple(_ACTIVATIONS)


def get_act_fn(act_fn) -> Callable:
  """Activation by upstream's names; None means silu, callables pass through."""
  if not act_fn:
    return tf.nn.silu
  if callable(act_fn):
    return act_fn
  return registry.lookup('act_fn', act_fn, _ACTIVATIONS)


# -- learning rate -----------------------------------------------------------
LR_SCHEDULES = ('exponential', 'cosine', 'linear', 'constant')


def learning_rate_at(step, *, initial_lr: float, steps_per_epoch: float,
                     total_steps: int, lr_decay_type: str = 'exponential',
                     decay_factor: float = 0.97, decay_epochs: float = 2.4,
                     warmup_epochs: float = 5, minimal_lr: float = 0.0):
  """Upstream's WarmupLearningRateSchedule as a function of the global step.

  Decay (staircase exponential, cosine, linear or constant), then the lr_min
  floor, then linear warmup from 0 over int(warmup_epochs * steps_per_epoch)
  steps (warmup is not floored, as upstream).
  """
  step = tf.cast(step, tf.float32)
  if lr_decay_type == 'exponential':
    decay_steps = steps_per_epoch * decay_epochs
    lr = initial_lr * tf.pow(decay_factor, tf.floor(step / decay_steps))
  elif lr_decay_type == 'cosine':
    lr = 0.5 * initial_lr * (1.0 + tf.cos(math.pi * step / total_steps))
  elif lr_decay_type == 'linear':
    lr = (1.0 - step / total_steps) * initial_lr
  elif lr_decay_type == 'constant':
    lr = tf.constant(initial_lr, tf.float32)
  else:
    raise ValueError(registry.unknown_name_message('lr_sched', lr_decay_type,
                                                   LR_SCHEDULES))
  if minimal_lr:
    lr = tf.maximum(lr, minimal_lr)
  if warmup_epochs:
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    if warmup_steps > 0:
      warmup_lr = initial_lr * step / float(warmup_steps)
      lr = tf.where(step < warmup_steps, warmup_lr, lr)
  return lr


def weight_decay_at(step, *, weight_decay: float, weight_decay_inc: float,
                    total_steps: int):
  """(1 + inc * step / total_steps) * weight_decay (upstream main.py)."""
  ratio = tf.cast(step, tf.float32) / float(total_steps)
  return (1.0 + weight_decay_inc * ratio) * weight_decay


def l2_loss(variables, exclude_pattern: str):
  """sum(||v||^2 / 2) over the variables whose path the pattern misses."""
  matcher = re.compile(exclude_pattern) if exclude_pattern else None
  kept = [v for v in variables
          if not (matcher and matcher.match(variable_path(v)))]
  if not kept:
    return tf.constant(0.0)
  return tf.add_n([tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in kept])


def variable_path(variable) -> str:
  return getattr(variable, 'path', None) or variable.name


# -- optimizers --------------------------------------------------------------
class TF1RMSprop(keras.optimizers.RMSprop):
  """RMSprop with TF1's initial mean square of one and TF1's fused kernel.

  Keras starts the mean square at zero, which makes the first updates about
  1/sqrt(1 - rho) times larger than upstream's tf.compat.v1 RMSPropOptimizer.
  The update rule itself (epsilon inside the square root, heavy-ball momentum)
  is the same in both. Like TF1, the update runs as one ResourceApplyRMSProp
  kernel per variable; Keras composes it from about ten small ops, which on
  a CPU costs a sizeable part of a small model's step (docs/benchmarks.md).
  The centered variant and runs without momentum keep Keras' update, as
  does `fused=False` (for comparisons).
  """

  def __init__(self, *args, fused: bool = True, **kwargs):
    super().__init__(*args, **kwargs)
    self.fused = fused

  def get_config(self):
    return dict(super().get_config(), fused=self.fused)

  def build(self, var_list):
    if self.built:
      return
    keras.optimizers.Optimizer.build(self, var_list)
    self._velocities = self.add_optimizer_variables(
        var_list, 'velocity', initializer='ones')
    self._momentums = []
    if self.momentum > 0:
      self._momentums = self.add_optimizer_variables(var_list, 'momentum')
    self._average_gradients = []
    if self.centered:
      self._average_gradients = self.add_optimizer_variables(
          var_list, 'average_gradient')

  def update_step(self, gradient, variable, learning_rate):
    if (not self.fused or self.centered or self.momentum <= 0 or
        isinstance(gradient, tf.IndexedSlices) or
        not hasattr(variable, 'handle')):
      return super().update_step(gradient, variable, learning_rate)
    index = self._get_variable_index(variable)
    dtype = variable.dtype
    # Under tf.distribute this runs inside the strategy's update() call, where
    # a mirrored slot's handle is the copy on this variable's device.
    tf.raw_ops.ResourceApplyRMSProp(
        var=variable.handle,
        ms=_tf_variable(self._velocities[index]).handle,
        mom=_tf_variable(self._momentums[index]).handle,
        lr=tf.cast(learning_rate, dtype), rho=tf.cast(self.rho, dtype),
        momentum=tf.cast(self.momentum, dtype),
        epsilon=tf.cast(self.epsilon, dtype),
        grad=tf.cast(gradient, dtype), use_locking=False)


def _tf_variable(variable):
  """The tf.Variable behind a Keras 3 variable (or the variable itself)."""
  return variable.value if isinstance(variable, keras.Variable) else variable


class TF1Momentum(keras.optimizers.Optimizer):
  """TF1's MomentumOptimizer: accum = momentum * accum + grad,
  var -= lr * accum (Nesterov: var -= lr * (grad + momentum * accum)).

  Keras' SGD keeps velocity = momentum * velocity - lr * grad instead, which
  folds each step's learning rate into the velocity: the two agree only
  while the rate is constant, and upstream's rate changes every step during
  warmup and decay. Runs TF1's fused ResourceApplyMomentum kernel where it
  can, as TF1 did; `fused=False` composes the same update from Keras ops.
  """

  def __init__(self, learning_rate=0.01, momentum=0.9, nesterov=False,
               fused: bool = True, name='TF1Momentum', **kwargs):
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    if not 0.0 <= momentum <= 1.0:
      raise ValueError(f'momentum must be in [0, 1], got {momentum}')
    self.momentum = momentum
    self.nesterov = nesterov
    self.fused = fused

  def build(self, var_list):
    if self.built:
      return
    super().build(var_list)
    self._accumulations = self.add_optimizer_variables(var_list,
                                                       'accumulation')

  def update_step(self, gradient, variable, learning_rate):
    accumulation = self._accumulations[self._get_variable_index(variable)]
    dtype = variable.dtype
    lr = tf.cast(learning_rate, dtype)
    momentum = tf.cast(self.momentum, dtype)
    gradient = tf.cast(gradient, dtype)
    if (self.fused and hasattr(variable, 'handle') and
        not isinstance(gradient, tf.IndexedSlices)):
      tf.raw_ops.ResourceApplyMomentum(
          var=variable.handle, accum=_tf_variable(accumulation).handle, lr=lr,
          grad=gradient, momentum=momentum, use_locking=False,
          use_nesterov=self.nesterov)
      return
    self.assign(accumulation, momentum * accumulation + gradient)
    step = (gradient + momentum * accumulation if self.nesterov
            else accumulation)
    self.assign_sub(variable, lr * step)

  def get_config(self):
    return dict(super().get_config(), momentum=self.momentum,
                nesterov=self.nesterov, fused=self.fused)


OPTIMIZERS = ('rmsprop', 'sgd', 'momentum', 'adam')
# train.loss_type: None and softmax mean softmax cross-entropy (the trainer's
# per_example_loss).
LOSS_TYPES = (None, 'softmax', 'sigmoid', 'custom')


def build_optimizer(optimizer_name='rmsprop', learning_rate=0.0, decay=0.9,
                    epsilon=0.001, momentum=0.9):
  """Upstream's optimizer choices with their hyperparameters."""
  if optimizer_name == 'rmsprop':
    return TF1RMSprop(learning_rate=learning_rate, rho=decay,
                      momentum=momentum, epsilon=epsilon)
  if optimizer_name == 'sgd':
    return keras.optimizers.SGD(learning_rate=learning_rate)
  if optimizer_name == 'momentum':
    return TF1Momentum(learning_rate=learning_rate, momentum=momentum)
  if optimizer_name == 'adam':
    # TF1 AdamOptimizer defaults: beta 0.9 / 0.999, epsilon 1e-8.
    return keras.optimizers.Adam(learning_rate=learning_rate, epsilon=1e-8)
  raise ValueError(registry.unknown_name_message('optimizer', optimizer_name,
                                                 OPTIMIZERS))


def clip_gradients(grads, clip_norm: float):
  """Upstream's gclip: clip each gradient's norm, then the global norm."""
  clip_norm = abs(clip_norm)
  grads = [tf.clip_by_norm(g, clip_norm) if g is not None else None
           for g in grads]
  grads, _ = tf.clip_by_global_norm(grads, clip_norm)
  return grads


# -- exponential moving average ----------------------------------------------
def ema_source_variables(model) -> List[tf.Variable]:
  """Trainable weights plus BN moving statistics, as upstream's get_ema_vars."""
  variables = list(model.trainable_weights)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      variables.extend([layer.moving_mean, layer.moving_variance])
  return variables


class ExponentialMovingAverage(tf.Module):
  """Shadow copies updated with decay min(ema_decay, (1 + n) / (10 + n)).

  Same rule as tf.compat.v1.train.ExponentialMovingAverage with
  num_updates = global step, which upstream uses.
  """

  def __init__(self, variables, decay: float, name='ema'):
    super().__init__(name=name)
    self.decay = float(decay)
    self._sources = list(variables)
    self.shadows = [
        tf.Variable(
            _value(v), trainable=False,
            name='ema_' + variable_path(v).replace('/', '_'),
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        for v in self._sources
    ]

  def effective_decay(self, step):
    step = tf.cast(step, tf.float32)
    return tf.minimum(self.decay, (1.0 + step) / (10.0 + step))

  def apply(self, step):
    decay = self.effective_decay(step)
    for shadow, source in zip(self.shadows, self._sources):
      value = tf.cast(_value(source), shadow.dtype)
      shadow.assign_sub((1.0 - decay) * (shadow - value))

  def reset_to(self, values=None):
    """Copies the live values (or the given arrays) into the shadows."""
    for i, shadow in enumerate(self.shadows):
      shadow.assign(values[i] if values is not None
                    else _value(self._sources[i]))

  def swap_into_model(self) -> Callable[[], None]:
    """Loads the averages into the model; returns a function that undoes it."""
    saved = [np.array(v.numpy()) for v in self._sources]
    for shadow, source in zip(self.shadows, self._sources):
      source.assign(tf.cast(shadow, source.dtype))

    def restore():
      for value, source in zip(saved, self._sources):
        source.assign(value)

    return restore


def _value(variable):
  if hasattr(variable, 'value') and not isinstance(variable, tf.Variable):
    return variable.value  # Keras 3 variable.
  return variable.read_value() if isinstance(variable, tf.Variable) else variable


# -- errors ------------------------------------------------------------------
def op_error_reason(error) -> str:
  """The reason in a TensorFlow op error, without the internals around it
  ('{{function_node ...}}', '[Op:ReadFile]') and without the path that the
  reason follows ('x.png; No such file or directory')."""
  text = re.sub(r'\{\{.*?\}\}|\[Op:.*$', '', error.message, flags=re.S)
  return text.rsplit(';', 1)[-1].strip() or type(error).__name__


# -- precision ---------------------------------------------------------------
PRECISION_POLICIES = ('float32', 'mixed_float16', 'mixed_bfloat16')


def precision_policy(mixed_precision, device_kind: str) -> str:
  """mixed_bfloat16 on TPU, mixed_float16 on GPU, float32 on CPU.

  `runtime.mixed_precision` may also name a Keras policy outright.
  """
  if isinstance(mixed_precision, str):
    if mixed_precision not in PRECISION_POLICIES:
      raise ValueError(registry.unknown_name_message(
          'runtime.mixed_precision', mixed_precision,
          ('true', 'false') + PRECISION_POLICIES))
    return mixed_precision
  if not mixed_precision:
    return 'float32'
  return {'TPU': 'mixed_bfloat16', 'GPU': 'mixed_float16'}.get(
      device_kind, 'float32')


def detect_device_kind(strategy=None) -> str:
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return 'TPU'
  if tf.config.list_logical_devices('GPU'):
    return 'GPU'
  return 'CPU'
