"""The TF2 trainer that replaces upstream's TPUEstimator model_fn and loop.

One `Trainer` owns the model, optimizer, EMA and checkpoint for a run in
`model_dir`, under a `tf.distribute` strategy. `train()` walks the stages of
progressive learning (progressive.py); each stage sets the image size and
regularization, builds its input pipeline from the current step and trains
until the stage's last step. Everything a resumed run needs (weights,
optimizer slots, EMA, random-number state, step) is in the checkpoint, and the
input stream is a function of the step, so a killed run restarted with the
same command continues exactly where the last checkpoint left it.
"""
import json
import math
import os
import re
import shutil
import signal
import tempfile
import time
from typing import Dict, List, Optional

from absl import logging
import keras
import tensorflow as tf

from automl_effnetv2 import datasets
from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import export
from automl_effnetv2 import hparams
from automl_effnetv2 import pretrained
from automl_effnetv2 import progressive
from automl_effnetv2 import registry
from automl_effnetv2 import strategy_choice
from automl_effnetv2 import utils

STRATEGIES = strategy_choice.STRATEGIES
# runtime.strategy values of upstream's main_tf2.py (default 'tpu'): 'gpus'
# mirrors over all GPUs, anything else but 'tpu' runs on one device.
UPSTREAM_STRATEGIES = {'gpus': 'mirrored', 'gpu': 'one_device', None: 'auto'}
CONFIG_FILE = 'config.yaml'
METRICS_FILE = 'metrics.json'


class TrainingInterrupted(KeyboardInterrupt):
  """SIGTERM (or Ctrl+C) stopped training; a checkpoint has been saved."""

  def __init__(self, signum):
    super().__init__(f'signal {signum}')
    self.signum = signum


class TrainingError(RuntimeError):
  """Training cannot go on; the message says why and what to do."""


# -- strategy -----------------------------------------------------------------
def build_strategy(name: str = 'auto', tpu: Optional[str] = None):
  """A tf.distribute strategy by name; 'auto' as strategy_choice decides."""
  name = UPSTREAM_STRATEGIES.get(name, name)
  registry.check_name('strategy', name, STRATEGIES)
  if name == 'auto':
    name = strategy_choice.choose_strategy(
        tpu, bool(os.environ.get('TF_CONFIG')),
        len(tf.config.list_logical_devices('GPU')))
  if name == 'tpu':
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu or '')
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  if name == 'multi_worker_mirrored':
    return tf.distribute.MultiWorkerMirroredStrategy()
  gpus = tf.config.list_logical_devices('GPU')
  return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else '/cpu:0')


# -- config helpers -------------------------------------------------------------
def flatten(tree, prefix='') -> Dict[str, object]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


def config_differences(saved: dict, current: dict,
                       ignore_prefixes=('runtime.',)) -> List[str]:
  """Keys whose values differ, outside the runtime section.

  A key the saved config lacks counts as its base_config default: it was
  added to base_config after that run started.
  """
  a, b = flatten(saved), flatten(current)
  defaults = flatten(hparams.base_config.as_dict())
  a.update({k: defaults[k] for k in b if k not in a and k in defaults})
  return sorted(k for k in set(a) | set(b)
                if a.get(k) != b.get(k) and not k.startswith(ignore_prefixes))


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{secs:02d}s' if hours else f'{minutes}m{secs:02d}s'


class _SumVariable:
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


class Trainer:
  """Trains and evaluates one run described by a `Config`.

  Args:
    config: the assembled run config (see main.build_config).
    model_dir: where checkpoints, config.yaml, metrics.json and TensorBoard
      summaries go.
    strategy: a tf.distribute strategy (default: build_strategy(config)).
    data_dir: dataset location, as upstream's --data_dir.
  """

  def __init__(self, config: hparams.Config, model_dir: str, strategy=None,
               data_dir: Optional[str] = None):
    self.config = config
    self.model_dir = model_dir
    self.data_dir = data_dir
    self.archive_ckpt = True
    self.eval_name = None  # Recorded with each evaluation (--eval_name).
    self.history = []  # One dict of training values per log interval.
    self.strategy = strategy or build_strategy(config.runtime.strategy,
                                               config.runtime.tpu)
    self.num_replicas = self.strategy.num_replicas_in_sync
    train, data = config.train, config.data
    if train.batch_size % self.num_replicas:
      raise TrainingError(
          f'train.batch_size={train.batch_size} is not divisible by the '
          f'{self.num_replicas} replicas; pick a multiple')
    self.train_split = train.split or 'train'
    self.eval_split = config.eval.split or 'eval'
    self.num_train_images = data.splits[self.train_split].num_images
    self.steps_per_epoch = self.num_train_images / train.batch_size
    self.total_steps = progressive.train_steps(
        train.epochs, self.num_train_images, train.batch_size, train.min_steps)
    self.train_size = progressive.train_image_size(train.isize,
                                                   config.eval.isize)
    self.eval_size = int(config.eval.isize or self.train_size)
    self.stages = self.schedule()
    try:
      # Steps after which training pauses for an evaluation (eval.every_*).
      self.eval_points = progressive.eval_steps(
          int(config.eval.get('every_steps') or 0),
          float(config.eval.get('every_epochs') or 0), self.num_train_images,
          train.batch_size, self.total_steps)
    except ValueError as e:
      raise TrainingError(str(e)) from e
    self.policy = utils.precision_policy(
        config.runtime.mixed_precision, utils.detect_device_kind(self.strategy))
    keras.mixed_precision.set_global_policy(self.policy)
    self.image_dtype = {'mixed_float16': tf.float16,
                        'mixed_bfloat16': tf.bfloat16}.get(self.policy,
                                                           tf.float32)
    if config.runtime.deterministic:
      tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(int(config.runtime.seed))
    self._build()

  def schedule(self) -> List[progressive.Stage]:
    """The per-stage settings of this run."""
    stages = progressive.stage_schedule(self.config, self.total_steps,
                                        self.train_size)
    return progressive.apply_ablation(stages, self.config.train.ablation)

  # -- construction -----------------------------------------------------------
  def _build(self):
    config = self.config
    with self.strategy.scope():
      model_config = config.model.as_dict()
      model_config['num_classes'] = config.data.num_classes
      model_config['bn_type'] = effnetv2_model.bn_type_for(
          model_config['bn_type'], utils.detect_device_kind(
              self.strategy) == 'TPU')
      self.model = effnetv2_model.EffNetV2Model(None, model_config)
      self.global_step = tf.Variable(
          0, dtype=tf.int64, trainable=False, name='global_step',
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      # Wall time spent in training loops, kept across resumes.
      self.train_seconds = tf.Variable(
          0.0, dtype=tf.float64, trainable=False, name='train_seconds',
          aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
      self.optimizer = utils.build_optimizer(
          config.train.optimizer, learning_rate=self._learning_rate)
      if self.policy == 'mixed_float16':
        self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
      self.train_variables = self._select_train_variables()
      self.optimizer.build(self.train_variables)
      self.ema = None
      if config.train.ema_decay and config.train.ema_decay > 0:
        self.ema = utils.ExponentialMovingAverage(
            utils.ema_source_variables(self.model), config.train.ema_decay)
      self.loss_sum = _SumVariable('loss_sum')
      self.xent_sum = _SumVariable('xent_sum')
      self.correct_sum = _SumVariable('correct_sum')
      self.example_count = _SumVariable('example_count')
      self.eval_top1 = _SumVariable('eval_top1')
      self.eval_top5 = _SumVariable('eval_top5')
      self.eval_count = _SumVariable('eval_count')
    seed_states = [layer.seed_generator.state for layer in self.model.layers
                   if hasattr(layer, 'seed_generator')]
    trackables = dict(model=self.model, optimizer=self.optimizer,
                      step=self.global_step, seed_states=seed_states,
                      train_seconds=self.train_seconds)
    if self.ema:
      trackables['ema'] = self.ema
    self._trackables = trackables
    self.checkpoint = tf.train.Checkpoint(**trackables)
    # Under MultiWorkerMirroredStrategy every worker saves (saving is a
    # collective), but only the chief writes to model_dir.
    self.is_chief = _is_chief(self.strategy)
    save_dir = (self.model_dir if self.is_chief else
                tempfile.mkdtemp(prefix='effnetv2_worker_ckpt_'))
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, save_dir,
        max_to_keep=config.runtime.keep_checkpoint_max,
        keep_checkpoint_every_n_hours=(
            config.runtime.keep_checkpoint_every_n_hours))
    self._train_loop = tf.function(self._train_loop_fn,
                                   reduce_retracing=True)
    self._train_step_fn = (
        tf.function(self._train_step, jit_compile=True)
        if config.runtime.jit_compile else self._train_step)
    self._eval_loop = tf.function(self._eval_loop_fn, reduce_retracing=True)

  def _select_train_variables(self):
    variables = self.model.trainable_variables
    pattern = self.config.train.varsexp
    if pattern:
      selected = [v for v in variables
                  if re.match(pattern, utils.variable_path(v))]
      if not selected:
        raise TrainingError(f'train.varsexp={pattern!r} matches no trainable '
                            'variable')
      return selected
    return variables

  def _learning_rate(self):
    train = self.config.train
    scale = train.batch_size / 256.0
    return utils.learning_rate_at(
        self.global_step, initial_lr=train.lr_base * scale,
        steps_per_epoch=self.steps_per_epoch, total_steps=self.total_steps,
        lr_decay_type=train.lr_sched, decay_factor=train.lr_decay_factor,
        decay_epochs=train.lr_decay_epoch, warmup_epochs=train.lr_warmup_epoch,
        minimal_lr=(train.lr_min or 0) * scale)

  def _weight_decay(self):
    train = self.config.train
    return utils.weight_decay_at(
        self.global_step, weight_decay=train.weight_decay,
        weight_decay_inc=train.weight_decay_inc, total_steps=self.total_steps)

  # -- losses -------------------------------------------------------------
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

  # -- training step and loop -------------------------------------------------
  def _train_step(self, images, labels):
    global_batch = self.config.train.batch_size
    with tf.GradientTape() as tape:
      logits = self.model(images, training=True)
      per_example = self.per_example_loss(labels, logits)
      xent = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=global_batch)
      l2 = self._weight_decay() * utils.l2_loss(
          self.model.trainable_variables,
          self.config.train.weight_decay_exclude)
      loss = xent + l2 / self.num_replicas
      scaled_loss = (self.optimizer.scale_loss(loss)
                     if isinstance(self.optimizer,
                                   keras.optimizers.LossScaleOptimizer)
                     else loss)
    grads = tape.gradient(scaled_loss, self.train_variables)
    if self.config.train.gclip:
      if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
        raise TrainingError('train.gclip with float16 loss scaling is not '
                            'supported; use bfloat16 or float32')
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

  # -- evaluation ---------------------------------------------------------
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
      self.strategy.run(self._eval_step, args=(images, labels))

  def evaluate(self, use_ema: bool = True) -> Dict[str, float]:
    """Top-1/top-5 on the eval split; EMA weights when the run keeps them."""
    inp = datasets.build_dataset_input(
        False, self.eval_size, self.image_dtype, self.data_dir,
        self.eval_split, self.config.data, seed=self.config.runtime.seed)
    dist = self.strategy.distribute_datasets_from_function(
        inp.distribute_dataset_fn(self.config.eval.batch_size))
    restore = self.ema.swap_into_model() if (use_ema and self.ema) else None
    try:
      for acc in (self.eval_top1, self.eval_top5, self.eval_count):
        acc.reset()
      started = time.time()
      self._eval_loop(dist)
      count = float(self.eval_count.result())
    finally:
      if restore:
        restore()
    if count == 0:
      raise TrainingError(f'the {self.eval_split} split produced no examples')
    return {
        'eval/acc_top1': float(self.eval_top1.result()) / count,
        'eval/acc_top5': float(self.eval_top5.result()) / count,
        'eval/num_examples': int(count),
        'eval/image_size': self.eval_size,
        'eval/ema': bool(use_ema and self.ema),
        'eval/seconds': time.time() - started,
        'global_step': int(self.global_step.numpy()),
    }

  # -- checkpoints ------------------------------------------------------------
  def restore(self) -> int:
    """Restores the latest checkpoint in model_dir; returns the step."""
    latest = tf.train.latest_checkpoint(self.model_dir)
    if latest:
      saved = {name.split('/')[0] for name, _ in tf.train.list_variables(latest)}
      # Checkpoints written before training time was recorded lack it; the
      # time then counts from this process.
      checkpoint = (self.checkpoint if 'train_seconds' in saved else
                    tf.train.Checkpoint(**{
                        k: v for k, v in self._trackables.items()
                        if k != 'train_seconds'}))
      checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info('restored %s at step %d', latest,
                   int(self.global_step.numpy()))
    elif self.config.train.ft_init_ckpt:
      self._init_from_pretrained(self.config.train.ft_init_ckpt)
    return int(self.global_step.numpy())

  def _init_from_pretrained(self, path):
    """Loads train.ft_init_ckpt once; weights that do not fit are refused."""
    if getattr(self, '_pretrained_from', None) == path:
      return
    try:
      summary = pretrained.load_pretrained(
          self.model, path, use_ema=bool(self.config.train.ft_init_ema))
    except pretrained.PretrainedError as e:
      raise TrainingError(f'train.ft_init_ckpt: {e}') from e
    if self.ema:
      self.ema.reset_to()
    self._pretrained_from = path
    for line in summary:
      print(line, flush=True)

  def save(self) -> str:
    path = self.manager.save(checkpoint_number=self.global_step)
    logging.info('saved %s', path)
    return path

  def export_weights(self) -> str:
    """Writes the (EMA) weights for fine-tuning to export/ema.weights.h5."""
    if not self.is_chief:
      return ''
    export_dir = os.path.join(self.model_dir, 'export')
    os.makedirs(export_dir, exist_ok=True)
    path = os.path.join(export_dir, 'ema.weights.h5')
    with export.ema_weights_in(self.model, self.ema):
      self.model.save_weights(path)
    return path

  # -- stage settings ---------------------------------------------------------
  def apply_stage(self, stage: progressive.Stage):
    """Sets the model's regularization and returns the stage's data config."""
    self.model.set_dropout_rate(stage.dropout_rate)
    data = hparams.Config(self.config.data.as_dict())
    data.ram = stage.ram
    data.mixup_alpha = stage.mixup_alpha
    data.cutmix_alpha = stage.cutmix_alpha
    return data

  def stage_iterator(self, stage: progressive.Stage, start_step: int,
                     data_config: Optional[hparams.Config] = None):
    """Sets the stage's regularization; returns its training batches from
    `start_step` on (the stream is a function of the step). `data_config`
    replaces the stage's data settings (benchmarks of pipeline options)."""
    stage_data = self.apply_stage(stage)
    data_config = stage_data if data_config is None else data_config
    inp = datasets.build_dataset_input(
        True, stage.image_size, self.image_dtype, self.data_dir,
        self.train_split, data_config, seed=self.config.runtime.seed)
    dist = self.strategy.distribute_datasets_from_function(
        inp.distribute_dataset_fn(self.config.train.batch_size, start_step))
    return iter(dist)

  def run_steps(self, iterator, num_steps: int):
    """Runs `num_steps` compiled training steps on `iterator`'s batches."""
    self._train_loop(iterator, tf.constant(num_steps, tf.int64))

  # -- the run ---------------------------------------------------------------
  def train(self, eval_every_stage: bool = False) -> Dict[str, object]:
    """Trains to the last step of the last stage, resuming if possible."""
    os.makedirs(self.model_dir, exist_ok=True)
    self._check_or_save_config()
    step = self.restore()
    summary = self._summary_writer('train')
    history = self._read_metrics().get('evals', [])
    evaluated = {record.get('global_step') for record in history}
    logging.info('training %d steps (%.2f epochs), %d stages; at step %d',
                 self.total_steps, self.config.train.epochs, len(self.stages),
                 step)
    with _graceful_interrupts(self):
      # A run killed between a scheduled save and its evaluation evaluates
      # first thing on resume.
      if step in self.eval_points and step not in evaluated:
        history.append(self._evaluate_and_record(
            progressive.stage_at_step(self.stages, step - 1)))
        evaluated.add(step)
      for stage in self.stages:
        if step >= stage.max_steps:
          continue
        step = self._train_stage(stage, step, summary, evaluated, history)
        self.save()
        if eval_every_stage and step not in evaluated:
          history.append(self._evaluate_and_record(stage))
          evaluated.add(step)
    result = {'global_step': step, 'total_steps': self.total_steps}
    if history:
      result.update(history[-1])
    return result

  def _train_stage(self, stage, step, summary, evaluated, history) -> int:
    config = self.config
    iterator = self.stage_iterator(stage, step)
    print(f'stage {stage.index + 1}/{len(self.stages)}: image size '
          f'{stage.image_size}, RandAugment magnitude {stage.ram:.2f}, mixup '
          f'{stage.mixup_alpha:.3f}, cutmix {stage.cutmix_alpha:.3f}, dropout '
          f'{stage.dropout_rate}, steps {step}->{stage.max_steps}', flush=True)
    log_every = max(1, int(config.runtime.log_step_count_steps))
    save_every = max(1, int(config.runtime.save_checkpoints_steps))
    batch = config.train.batch_size
    stage_start, stage_start_step = time.time(), step
    eval_points = [p for p in self.eval_points if step < p < stage.max_steps]
    while step < stage.max_steps:
      next_stop = min([stage.max_steps, (step // log_every + 1) * log_every,
                       (step // save_every + 1) * save_every] +
                      [p for p in eval_points if p > step])
      for acc in (self.loss_sum, self.xent_sum, self.correct_sum,
                  self.example_count):
        acc.reset()
      started = time.time()
      self.run_steps(iterator, next_stop - step)
      elapsed = time.time() - started
      self.train_seconds.assign_add(elapsed)
      num_steps, step = next_stop - step, next_stop
      count = max(float(self.example_count.result()), 1.0)
      loss = float(self.loss_sum.result()) / num_steps
      if not math.isfinite(loss):
        raise TrainingError(
            f'the training loss became {loss} between steps '
            f'{step - num_steps} and {step} (stage {stage.index + 1}); '
            f'nothing was saved after it, the last good checkpoint is '
            f'{self.manager.latest_checkpoint}. Lower train.lr_base or set '
            'train.gclip, then rerun the same command to resume from it')
      values = {
          'loss': loss,
          'xent': float(self.xent_sum.result()) / num_steps,
          'accuracy': float(self.correct_sum.result()) / count,
          'learning_rate': float(self._learning_rate()),
          'weight_decay': float(self._weight_decay()),
          'images_per_second': num_steps * batch / max(elapsed, 1e-9),
          'image_size': stage.image_size,
          'randaug_magnitude': stage.ram,
          'mixup_alpha': stage.mixup_alpha,
          'cutmix_alpha': stage.cutmix_alpha,
          'dropout_rate': self.model.dropout_rate,
          'stage': stage.index + 1,
      }
      self.history.append(dict(values, step=step))
      with summary.as_default(step=step):
        for name, value in values.items():
          tf.summary.scalar(f'train/{name}', value)
      done = step - stage_start_step
      rate = done / max(time.time() - stage_start, 1e-9)
      eta = (self.total_steps - step) / max(rate, 1e-9)
      print(f'stage {stage.index + 1}/{len(self.stages)} step '
            f'{step}/{self.total_steps} loss {loss:.4f} acc '
            f'{values["accuracy"]:.4f} lr {values["learning_rate"]:.5f} '
            f'{values["images_per_second"]:.1f} img/s ETA '
            f'{_format_duration(eta)}', flush=True)
      if step in eval_points and step not in evaluated:
        # Saved first: the best-checkpoint archive copies the latest one.
        self.save()
        history.append(self._evaluate_and_record(stage))
        evaluated.add(step)
        # Evaluation time is not training time: restart the ETA clock.
        stage_start, stage_start_step = time.time(), step
      elif step % save_every == 0 and step < stage.max_steps:
        self.save()
    summary.flush()
    return step

  def _evaluate_and_record(self, stage=None) -> Dict[str, object]:
    metrics = self.evaluate()
    if self.eval_name:
      metrics['eval_name'] = self.eval_name
    if stage is not None:
      metrics['stage'] = stage.index + 1
    seconds = float(self.train_seconds.numpy())
    metrics['total_steps'] = self.total_steps
    metrics['epoch'] = metrics['global_step'] / self.steps_per_epoch
    metrics['train_seconds'] = seconds
    metrics['train_images_per_second'] = (
        metrics['global_step'] * self.config.train.batch_size / seconds
        if seconds else None)
    metrics['wall_time'] = time.time()
    print(f"eval at step {metrics['global_step']}: top-1 "
          f"{metrics['eval/acc_top1']:.4f} top-5 "
          f"{metrics['eval/acc_top5']:.4f} ({metrics['eval/num_examples']} "
          f"images, {'EMA' if metrics['eval/ema'] else 'raw'} weights)",
          flush=True)
    writer = self._summary_writer('eval')
    with writer.as_default(step=metrics['global_step']):
      tf.summary.scalar('eval/acc_top1', metrics['eval/acc_top1'])
      tf.summary.scalar('eval/acc_top5', metrics['eval/acc_top5'])
    writer.flush()
    self._append_metrics(metrics)
    if self.archive_ckpt:
      self.archive_if_best(metrics)
    return metrics

  def evaluate_and_record(self) -> Dict[str, object]:
    """Evaluates the restored weights and appends to metrics.json."""
    return self._evaluate_and_record(
        progressive.stage_at_step(self.stages,
                                  int(self.global_step.numpy()) - 1))

  # -- bookkeeping ------------------------------------------------------------
  def _summary_writer(self, name):
    if not self.is_chief:
      return tf.summary.create_noop_writer()
    return tf.summary.create_file_writer(os.path.join(self.model_dir, name))

  def check_saved_config(self):
    """Refuses to continue a run in model_dir that used another config."""
    path = os.path.join(self.model_dir, CONFIG_FILE)
    if not (os.path.exists(path) and tf.train.latest_checkpoint(
        self.model_dir)):
      return
    differences = config_differences(hparams.load_yaml(path),
                                     self.config.as_dict())
    if differences:
      raise TrainingError(
          f'{self.model_dir} holds a run with another config (differs in '
          f'{", ".join(differences[:8])}); use the flags of that run (its '
          f'config is {path}) or a new --model_dir')

  def _check_or_save_config(self):
    if not self.is_chief:
      return
    self.check_saved_config()
    self.config.save_to_yaml(os.path.join(self.model_dir, CONFIG_FILE))

  def _read_metrics(self) -> dict:
    path = os.path.join(self.model_dir, METRICS_FILE)
    if os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        return json.load(f)
    return {}

  def _append_metrics(self, metrics):
    if not self.is_chief:
      return
    record = self._read_metrics()
    record.setdefault('evals', []).append(metrics)
    record['final'] = metrics
    record['model_name'] = self.config.model.model_name
    record['dataset'] = self.config.data.ds_name
    record['ablation'] = self.config.train.ablation
    _write_json_atomically(os.path.join(self.model_dir, METRICS_FILE), record)

  def archive_if_best(self, metrics) -> bool:
    """Copies the latest checkpoint to archive/ when its top-1 is the best."""
    if not self.is_chief:
      return False
    objective = metrics['eval/acc_top1']
    best_path = os.path.join(self.model_dir, 'best_objective.txt')
    if os.path.exists(best_path):
      with open(best_path, encoding='utf-8') as f:
        if float(f.read()) > objective:
          return False
    latest = self.manager.latest_checkpoint
    if not latest:
      return False
    archive = os.path.join(self.model_dir, 'archive')
    staging = archive + '.tmp'
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for name in tf.io.gfile.glob(latest + '.*'):
      shutil.copy(name, staging)
    with open(os.path.join(staging, 'best_eval.json'), 'w',
              encoding='utf-8') as f:
      json.dump(metrics, f, indent=2)
    shutil.rmtree(archive, ignore_errors=True)
    os.replace(staging, archive)
    with open(best_path, 'w', encoding='utf-8') as f:
      f.write(f'{objective:f}')
    return True


def _is_chief(strategy) -> bool:
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  cluster = resolver.cluster_spec().as_dict()
  if 'chief' in cluster:
    return resolver.task_type == 'chief'
  return resolver.task_type == 'worker' and resolver.task_id == 0


def _write_json_atomically(path, record):
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(record, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


class _graceful_interrupts:  # pylint: disable=invalid-name
  """Saves a checkpoint when SIGINT/SIGTERM stop training between loops."""

  def __init__(self, trainer):
    self.trainer = trainer
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      raise TrainingInterrupted(signum)
    try:
      self._previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # Not the main thread.
      self._previous = None
    return self

  def __exit__(self, exc_type, exc, tb):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    if isinstance(exc, KeyboardInterrupt):  # TrainingInterrupted included.
      path = self.trainer.save()
      print(f'interrupted: saved {path}; rerun the same command to resume',
            flush=True)
    return False
