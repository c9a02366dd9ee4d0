"""What training minimizes, and at which rates: the per-example loss, the
learning rate and the weight decay of the current step (upstream's model_fn).
"""
import keras
import tensorflow as tf

from automl_effnetv2 import hparams
from automl_effnetv2 import progressive
from automl_effnetv2 import utils


class Objective:
  """The loss and the step-dependent rates of a run.

  The rates read `global_step` when called, so the optimizer takes
  `learning_rate` itself as its (callable) rate.
  """

  def __init__(self, config: hparams.Config, global_step: tf.Variable,
               plan: progressive.RunPlan):
    self.config = config
    self.global_step = global_step
    self.plan = plan

  def per_example_loss(self, labels, logits):
    train = self.config.train
    labels = tf.cast(labels, tf.float32)
    smoothing = train.label_smoothing or 0.0
    if train.loss_type == 'sigmoid':
      return keras.losses.binary_crossentropy(
          labels, logits, from_logits=True, label_smoothing=smoothing)
    if train.loss_type == 'custom':
      return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
          labels=labels, logits=logits), axis=-1)
    if self.config.data.multiclass:
      labels = labels / tf.reduce_sum(labels, axis=1, keepdims=True)
    return keras.losses.categorical_crossentropy(
        labels, logits, from_logits=True, label_smoothing=smoothing)

  def chance_loss(self) -> float:
    """The loss of all-zero logits: where an untrained model starts."""
    classes = self.config.data.num_classes
    labels = tf.one_hot([0], classes)
    return float(self.per_example_loss(labels, tf.zeros([1, classes]))[0])

  def learning_rate(self):
    train = self.config.train
    scale = train.batch_size / 256.0
    return utils.learning_rate_at(
        self.global_step, initial_lr=train.lr_base * scale,
        steps_per_epoch=self.plan.steps_per_epoch,
        total_steps=self.plan.total_steps, lr_decay_type=train.lr_sched,
        decay_factor=train.lr_decay_factor, decay_epochs=train.lr_decay_epoch,
        warmup_epochs=train.lr_warmup_epoch,
        minimal_lr=(train.lr_min or 0) * scale)

  def weight_decay(self):
    train = self.config.train
    return utils.weight_decay_at(
        self.global_step, weight_decay=train.weight_decay,
        weight_decay_inc=train.weight_decay_inc,
        total_steps=self.plan.total_steps)
