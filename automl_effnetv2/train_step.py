"""The compiled steps: training, evaluation, and the probe that judges the
weights before a save; and the per-replica sums they leave behind."""
import keras
import tensorflow as tf

from automl_effnetv2 import objective as objective_lib
from automl_effnetv2 import train_errors
from automl_effnetv2 import utils


def _plain(step):
  """`step`, traced as written (without autograph's source conversion)."""
  return tf.autograph.experimental.do_not_convert(step)


class SumVariable:
  """A per-replica accumulator whose read is the sum over replicas."""

  def __init__(self, name, dtype=tf.float32):
    self.var = tf.Variable(
        0, dtype=dtype, trainable=False, name=name,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM)

  def add(self, value):
    self.var.assign_add(tf.cast(value, self.var.dtype))

  def reset(self):
    self.var.assign(tf.zeros_like(self.var))

  def result(self):
    return self.var.read_value()


class Steps:
  """Training, evaluation and probe steps of one model under a strategy.

  Built inside the strategy's scope (the sums are variables). Training sums
  its loss, cross-entropy, correct predictions and examples; evaluation its
  top-1/top-5 hits and examples; the probe the loss of one batch.
  """

  def __init__(self, config, strategy, model, optimizer, ema, global_step,
               train_variables, objective: objective_lib.Objective):
    self.config = config
    self.strategy = strategy
    self.num_replicas = strategy.num_replicas_in_sync
    self.model = model
    self.optimizer = optimizer
    self.ema = ema
    self.global_step = global_step
    self.train_variables = train_variables
    self.objective = objective
    self.loss_sum = SumVariable('loss_sum')
    self.xent_sum = SumVariable('xent_sum')
    self.correct_sum = SumVariable('correct_sum')
    self.example_count = SumVariable('example_count')
    self.eval_top1 = SumVariable('eval_top1')
    self.eval_top5 = SumVariable('eval_top5')
    self.eval_count = SumVariable('eval_count')
    self.probe_loss_sum = SumVariable('probe_loss_sum')
    # The loops need autograph (a tf.range loop, a loop over a dataset);
    # the steps do not: their Python branches are on settings, never on
    # tensors, as in Keras' own trainer. Converting the model, optimizer and
    # EMA code cost seconds in every process's first step.
    self._train_step_fn = _plain(self._train_step)
    if config.runtime.jit_compile:
      self._train_step_fn = tf.function(self._train_step_fn, jit_compile=True)
    self._eval_step_fn = _plain(self._eval_step)
    self.probe = tf.function(self._probe_fn, reduce_retracing=True,
                             autograph=False)  # No loop: nothing to convert.
    self.train_loop = tf.function(self._train_loop_fn, reduce_retracing=True)
    self.eval_loop = tf.function(self._eval_loop_fn, reduce_retracing=True)

  def _regularized(self, logits, labels):
    """(loss, cross-entropy) of this replica's share of the global batch."""
    xent = tf.nn.compute_average_loss(
        self.objective.per_example_loss(labels, logits),
        global_batch_size=self.config.train.batch_size)
    l2 = self.objective.weight_decay() * utils.l2_loss(
        self.model.trainable_variables, self.config.train.weight_decay_exclude)
    return xent + l2 / self.num_replicas, xent

  # -- training ---------------------------------------------------------------
  def reset_train_sums(self):
    for acc in (self.loss_sum, self.xent_sum, self.correct_sum,
                self.example_count):
      acc.reset()

  def _train_step(self, images, labels):
    scaling = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
    with tf.GradientTape() as tape:
      logits = self.model(images, training=True)
      loss, xent = self._regularized(logits, labels)
      scaled_loss = self.optimizer.scale_loss(loss) if scaling else loss
    grads = tape.gradient(scaled_loss, self.train_variables)
    if self.config.train.gclip:
      if scaling:
        raise train_errors.TrainingError(
            'train.gclip with float16 loss scaling is not supported; use '
            'bfloat16 or float32')
      grads = utils.clip_gradients(grads, self.config.train.gclip)
    self.optimizer.apply(grads, self.train_variables)
    self.global_step.assign_add(1)
    if self.ema:
      self.ema.apply(self.global_step)
    correct = tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1))
    self.loss_sum.add(loss)  # Summed over replicas: the global loss.
    self.xent_sum.add(xent)
    self.correct_sum.add(tf.reduce_sum(tf.cast(correct, tf.float32)))
    self.example_count.add(tf.shape(labels)[0])

  def _train_loop_fn(self, iterator, num_steps):
    for _ in tf.range(num_steps):
      self.strategy.run(self._train_step_fn, args=next(iterator))

  # -- evaluation -------------------------------------------------------------
  def reset_eval_sums(self):
    for acc in (self.eval_top1, self.eval_top5, self.eval_count):
      acc.reset()

  def _eval_step(self, images, labels):
    logits = self.model(images, training=False)
    label_ids = tf.argmax(labels, -1, output_type=tf.int32)
    top1 = tf.equal(tf.argmax(logits, -1, output_type=tf.int32), label_ids)
    top5 = tf.math.in_top_k(label_ids, tf.cast(logits, tf.float32),
                            k=min(5, logits.shape[-1]))
    self.eval_top1.add(tf.reduce_sum(tf.cast(top1, tf.float32)))
    self.eval_top5.add(tf.reduce_sum(tf.cast(top5, tf.float32)))
    self.eval_count.add(tf.shape(labels)[0])

  def _eval_loop_fn(self, dataset):
    for images, labels in dataset:
      self.strategy.run(self._eval_step_fn, args=(images, labels))

  # -- judging the weights ----------------------------------------------------
  def _probe_step(self, images, labels):
    """The training loss of the current weights on one batch. In training
    mode: the moving batch-norm statistics lag the weights far behind when
    the rate is high, so an inference-mode loss condemns sane weights."""
    logits = self.model(images, training=True)
    self.probe_loss_sum.add(self._regularized(logits, labels)[0])

  def _probe_fn(self, images, labels):
    self.strategy.run(self._probe_step, args=(images, labels))

  def weights_loss(self, probe_batch, seed_states) -> float:
    """The loss of the weights as they are now on the batch `probe_batch()`
    gives (what a checkpoint written now would resume with); NaN when any
    weight or optimizer slot is not finite."""
    variables = [v for v in self.model.variables + self.optimizer.variables
                 if tf.as_dtype(v.dtype).is_floating]
    if not bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                               for v in variables])):
      return float('nan')
    # Training mode moves the batch-norm statistics and the dropout seeds;
    # put them back, so that judging a run does not change it.
    side_effects = list(self.model.non_trainable_variables) + list(
        seed_states)
    before = [v.numpy() for v in side_effects]
    self.probe_loss_sum.reset()
    self.probe(*probe_batch())
    for variable, value in zip(side_effects, before):
      variable.assign(value)
    return float(self.probe_loss_sum.result())
