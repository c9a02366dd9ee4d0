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
import os
import re
import signal
import tempfile
import time
from typing import Dict, List, Optional

from absl import logging
import keras
import tensorflow as tf

from automl_effnetv2 import augment_spec
from automl_effnetv2 import datasets
from automl_effnetv2 import divergence
from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import export
from automl_effnetv2 import hparams
from automl_effnetv2 import pretrained
from automl_effnetv2 import progressive
from automl_effnetv2 import registry
from automl_effnetv2 import run_dir as run_dir_lib
from automl_effnetv2 import strategy_choice
from automl_effnetv2 import utils

STRATEGIES = strategy_choice.STRATEGIES
CONFIG_FILE = run_dir_lib.CONFIG_FILE
METRICS_FILE = run_dir_lib.METRICS_FILE


class TrainingInterrupted(KeyboardInterrupt):
  """SIGTERM (or Ctrl+C) stopped training; a checkpoint has been saved."""

  def __init__(self, signum):
    super().__init__(f'signal {signum}')
    self.signum = signum


class TrainingError(RuntimeError):
  """Training cannot go on; the message says why and what to do."""


class Diverged(TrainingError):
  """The loss exploded. A rerun goes on with `changes` to the config (dotted
  keys), from checkpoint `resume_from` when there is a good one."""

  def __init__(self, message: str, resume_from: Optional[str],
               changes: Dict[str, object]):
    super().__init__(message)
    self.resume_from = resume_from
    self.changes = changes


# -- strategy -----------------------------------------------------------------
def build_strategy(name: str = 'auto', tpu: Optional[str] = None):
  """A tf.distribute strategy by name; 'auto' as strategy_choice decides."""
  name = strategy_choice.canonical_name(name)
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
    self._inputs_checked = set()  # check_inputs() done for train / eval.
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
      # Read and checked once; each stage sets its magnitude on it.
      self.augment = augment_spec.AugmentSpec.from_config(data)
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
      self.probe_loss_sum = _SumVariable('probe_loss_sum')
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
    self.run_dir = run_dir_lib.RunDir(self.model_dir, self.is_chief)
    self._save_dir = (self.model_dir if self.is_chief else
                      tempfile.mkdtemp(prefix='effnetv2_worker_ckpt_'))
    self.manager = self._checkpoint_manager()
    # Judges each log interval's loss and the weights of each checkpoint.
    self.loss_watch = divergence.LossWatch(self._chance_loss())
    self._probe_images = None  # The fixed batch that judges the weights.
    self._probe = tf.function(self._probe_fn, reduce_retracing=True)
    self._train_loop = tf.function(self._train_loop_fn,
                                   reduce_retracing=True)
    self._train_step_fn = (
        tf.function(self._train_step, jit_compile=True)
        if config.runtime.jit_compile else self._train_step)
    self._eval_loop = tf.function(self._eval_loop_fn, reduce_retracing=True)

  def _checkpoint_manager(self):
    """A manager reading the folder's checkpoint state as it is now."""
    runtime = self.config.runtime
    return tf.train.CheckpointManager(
        self.checkpoint, self._save_dir,
        max_to_keep=runtime.keep_checkpoint_max,
        keep_checkpoint_every_n_hours=runtime.keep_checkpoint_every_n_hours)

  def _chance_loss(self) -> float:
    """The loss of all-zero logits: where an untrained model starts."""
    classes = self.config.data.num_classes
    labels = tf.one_hot([0], classes)
    return float(self.per_example_loss(labels, tf.zeros([1, classes]))[0])

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
        self.eval_split, self.config.data, seed=self.config.runtime.seed,
        augment=self.augment)
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
  def restore(self, resume_from: Optional[str] = None,
              set_aside_damaged: bool = False) -> int:
    """Restores the newest readable checkpoint (or `resume_from`, a name like
    'ckpt-150'); returns the step.

    Checkpoints that do not read back whole are skipped with a message, and
    moved to damaged/ when `set_aside_damaged` (the folder's owner).
    """
    candidates = [self._named_checkpoint(resume_from)] if resume_from else None
    latest, skipped = self.run_dir.loadable_checkpoint(candidates)
    for path, problem in skipped:
      print(f'skipped checkpoint {os.path.basename(path)}: it cannot be read '
            f'({problem})', flush=True)
    if skipped and not latest:
      names = ', '.join(os.path.basename(p) for p, _ in skipped)
      raise TrainingError(
          f'no checkpoint in {self.model_dir} can be read ({names} damaged); '
          f'copy a good one back (archive/ keeps the best), or remove the '
          'ckpt-* files and the checkpoint file to start over')
    if skipped and set_aside_damaged and not resume_from:
      self.run_dir.set_aside([p for p, _ in skipped], run_dir_lib.DAMAGED_DIR)
      print(f'moved the damaged checkpoints to {run_dir_lib.DAMAGED_DIR}/; '
            f'resuming from {os.path.basename(latest)}', flush=True)
      self.manager = self._checkpoint_manager()
    if latest:
      saved = {name.split('/')[0] for name, _ in tf.train.list_variables(latest)}
      # Checkpoints written before training time was recorded lack it; the
      # time then counts from this process.
      checkpoint = (self.checkpoint if 'train_seconds' in saved else
                    tf.train.Checkpoint(**{
                        k: v for k, v in self._trackables.items()
                        if k != 'train_seconds'}))
      try:
        checkpoint.restore(latest).assert_existing_objects_matched()
      except (AssertionError, ValueError, tf.errors.OpError) as e:
        reason = str(e).strip().splitlines()[0][:200]
        raise TrainingError(
            f'{latest} does not fit this model ({reason}): it was written by '
            f'another --model_name or config; use the flags of the run that '
            f'wrote it, or another --model_dir') from e
      logging.info('restored %s at step %d', latest,
                   int(self.global_step.numpy()))
    elif self.config.train.ft_init_ckpt:
      self._init_from_pretrained(self.config.train.ft_init_ckpt)
    return int(self.global_step.numpy())

  def _named_checkpoint(self, name: str) -> str:
    """The checkpoint of this folder that --resume_from names."""
    path = self.run_dir.join(os.path.basename(name))
    listed = self.run_dir.checkpoints()
    if path not in listed:
      raise TrainingError(
          f'--resume_from={name}: no such checkpoint in {self.model_dir}; '
          'there are ' + (', '.join(os.path.basename(p) for p in listed)
                          or 'none'))
    return path

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

  # -- judging the weights before a save ---------------------------------------
  def _probe_batch(self):
    """The first batch of training images, eval-preprocessed: the same
    images, without augmentation or mixing, each time the weights are
    judged; built once, uncached."""
    if self._probe_images is None:
      data = hparams.Config(self.config.data.as_dict())
      data.cache = False
      inp = datasets.build_dataset_input(
          False, self.eval_size, self.image_dtype, self.data_dir,
          self.train_split, data, seed=self.config.runtime.seed,
          augment=self.augment)
      self._probe_images = next(iter(
          self.strategy.distribute_datasets_from_function(
              inp.distribute_dataset_fn(self.config.train.batch_size))))
    return self._probe_images

  def _probe_step(self, images, labels):
    """The training loss of the current weights on one batch. In training
    mode: the moving batch-norm statistics lag the weights far behind when
    the rate is high, so an inference-mode loss condemns sane weights."""
    logits = self.model(images, training=True)
    xent = tf.nn.compute_average_loss(
        self.per_example_loss(labels, logits),
        global_batch_size=self.config.train.batch_size)
    l2 = self._weight_decay() * utils.l2_loss(
        self.model.trainable_variables, self.config.train.weight_decay_exclude)
    self.probe_loss_sum.add(xent + l2 / self.num_replicas)

  def _probe_fn(self, images, labels):
    self.strategy.run(self._probe_step, args=(images, labels))

  def weights_loss(self) -> float:
    """The loss of the weights as they are now (what a checkpoint written
    now would resume with); NaN when any weight or optimizer slot is not
    finite."""
    variables = [v for v in self.model.variables + self.optimizer.variables
                 if tf.as_dtype(v.dtype).is_floating]
    if not bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                               for v in variables])):
      return float('nan')
    # Training mode moves the batch-norm statistics and the dropout seeds;
    # put them back, so that judging a run does not change it.
    side_effects = [v for v in self.model.non_trainable_variables
                    + self._trackables['seed_states']]
    before = [v.numpy() for v in side_effects]
    self.probe_loss_sum.reset()
    self._probe(*self._probe_batch())
    for variable, value in zip(side_effects, before):
      variable.assign(value)
    return float(self.probe_loss_sum.result())

  def save(self) -> Optional[str]:
    """Saves a checkpoint, unless the loss is exploding or the weights are
    not sane (returns None then; the loss watch records the weights' loss,
    so that a run with bad weights stops)."""
    if not self.loss_watch.healthy:
      return None
    step = int(self.global_step.numpy())
    if not self.loss_watch.observe(self.weights_loss(), step):
      logging.warning('not saving step %d: the loss of its weights is %g',
                      step, self.loss_watch.last_loss)
      return None
    with run_dir_lib.writing(self.model_dir):
      path = self.manager.save(checkpoint_number=self.global_step)
    logging.info('saved %s', path)
    return path

  def export_weights(self) -> str:
    """Writes the (EMA) weights for fine-tuning to export/ema.weights.h5."""
    if not self.is_chief:
      return ''
    path = self.run_dir.export_path('ema.weights.h5')
    with export.ema_weights_in(self.model, self.ema):
      with run_dir_lib.writing(path):
        self.model.save_weights(path)
    return path

  # -- stage settings ---------------------------------------------------------
  def apply_stage(self, stage: progressive.Stage):
    """Sets the model's dropout and returns the stage's data config (its
    mixup and cutmix; the magnitude is in `stage_augment`)."""
    self.model.set_dropout_rate(stage.dropout_rate)
    data = hparams.Config(self.config.data.as_dict())
    data.mixup_alpha = stage.mixup_alpha
    data.cutmix_alpha = stage.cutmix_alpha
    return data

  def stage_augment(self, stage: progressive.Stage):
    """The run's augmentation at the stage's RandAugment magnitude."""
    return self.augment.at_magnitude(stage.ram)

  def stage_iterator(self, stage: progressive.Stage, start_step: int,
                     data_config: Optional[hparams.Config] = None):
    """Sets the stage's regularization; returns its training batches from
    `start_step` on (the stream is a function of the step). `data_config`
    replaces the stage's data settings (benchmarks of pipeline options)."""
    stage_data = self.apply_stage(stage)
    data_config = stage_data if data_config is None else data_config
    inp = datasets.build_dataset_input(
        True, stage.image_size, self.image_dtype, self.data_dir,
        self.train_split, data_config, seed=self.config.runtime.seed,
        augment=self.stage_augment(stage))
    dist = self.strategy.distribute_datasets_from_function(
        inp.distribute_dataset_fn(self.config.train.batch_size, start_step))
    return iter(dist)

  def run_steps(self, iterator, num_steps: int):
    """Runs `num_steps` compiled training steps on `iterator`'s batches."""
    self._train_loop(iterator, tf.constant(num_steps, tf.int64))

  # -- the run ---------------------------------------------------------------
  def check_inputs(self, is_training: bool = True):
    """Opens the dataset's source, so that missing or damaged data is
    reported before anything is written to the run folder."""
    if is_training in self._inputs_checked:
      return
    inp = datasets.build_dataset_input(
        is_training, self.train_size if is_training else self.eval_size,
        self.image_dtype, self.data_dir,
        self.train_split if is_training else self.eval_split,
        self.config.data, seed=self.config.runtime.seed, augment=self.augment)
    inp.make_source_dataset(0, 1)
    self._inputs_checked.add(is_training)

  def train(self, eval_every_stage: bool = False,
            resume_from: Optional[str] = None) -> Dict[str, object]:
    """Trains to the last step of the last stage, resuming if possible.

    The run folder is locked for the whole call. `resume_from` (a checkpoint
    name) restarts from that checkpoint, where the optimizer settings of
    divergence.RESUMABLE_CHANGES may differ from the saved config; the change
    is recorded in config.yaml and later checkpoints move to superseded/.
    """
    self.check_inputs()
    self.run_dir.create()
    with self.run_dir.owned():
      # Checked first: a refused command changes nothing in the folder.
      changed = self.run_dir.check_saved_config(
          self.config, divergence.RESUMABLE_CHANGES if resume_from else ())
      removed = self.run_dir.remove_leftovers()
      if removed:
        print('removed what an interrupted save left: ' + ', '.join(removed),
              flush=True)
      step = self.restore(resume_from, set_aside_damaged=True)
      self._carry_config_history(step, resume_from, changed)
      self.run_dir.save_config(self.config)
      result = self._train_stages(step, eval_every_stage)
    return result

  def _carry_config_history(self, step, resume_from, changed):
    """Keeps the folder's record of --resume_from changes in the config."""
    saved = self.run_dir.saved_config() if step else None
    history = list(((saved or {}).get('runtime') or {}).get(
        'config_changes') or [])
    if resume_from:
      later = [p for p in self.run_dir.checkpoints()
               if run_dir_lib.checkpoint_number(p) > step]
      self.run_dir.set_aside(later, run_dir_lib.SUPERSEDED_DIR)
      self.manager = self._checkpoint_manager()
      before = run_dir_lib.flatten(saved or {})
      after = run_dir_lib.flatten(self.config.as_dict())
      entry = {'step': step, 'resumed_from': os.path.basename(resume_from),
               'changed': {k: [before.get(k), after.get(k)] for k in changed}}
      if any(k.startswith('train.lr_') for k in changed):
        entry['momentum_reset'] = self._reset_momentum()
      history.append(entry)
      print(f'resuming from {os.path.basename(resume_from)} at step {step}'
            + ''.join(f'; {k} {before.get(k)} -> {after.get(k)}'
                      for k in changed)
            + ('; momentum reset' if entry.get('momentum_reset') else '')
            + (f'; moved later checkpoints to {run_dir_lib.SUPERSEDED_DIR}/'
               if later else ''), flush=True)
    self.config.runtime.config_changes = history or None

  def _reset_momentum(self) -> bool:
    """Zeroes the optimizer's momentum slots; True if there were any.

    Momentum (RMSProp's mom: learning rate times gradient; TF1 momentum's
    accumulation: gradients) carries the diverging stretch's huge steps or
    gradients, so without a reset it keeps pushing the weights the wrong way
    for a few dozen steps after the rate is lowered.
    """
    momentums = [v for v in self.optimizer.variables
                 if v.path.endswith(('_momentum', '_accumulation'))]
    for variable in momentums:
      variable.assign(tf.zeros_like(variable))
    return bool(momentums)

  def _train_stages(self, step, eval_every_stage) -> Dict[str, object]:
    summary = self.run_dir.summary_writer('train')
    history = run_dir_lib.read_metrics(self.model_dir).get('evals', [])
    evaluated = {record.get('global_step') for record in history}
    logging.info('training %d steps (%.2f epochs), %d stages; at step %d',
                 self.total_steps, self.config.train.epochs, len(self.stages),
                 step)
    due = set(self.eval_points)
    if eval_every_stage:
      due.update(stage.max_steps for stage in self.stages)
    with _graceful_interrupts(self):
      # A run stopped between a save and its evaluation (killed, or
      # interrupted during the evaluation) evaluates first thing on resume.
      if step in due and step not in evaluated:
        history.append(self._evaluate_and_record(
            progressive.stage_at_step(self.stages, step - 1)))
        evaluated.add(step)
      for stage in self.stages:
        if step >= stage.max_steps:
          continue
        step = self._train_stage(stage, step, summary, evaluated, history)
        if not self.save():  # A stage must end on a checkpoint.
          raise self._diverged(stage, step)
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
      self.loss_watch.observe(loss, step - num_steps)
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
      self._stop_if_diverged(stage, step)
      if step in eval_points and step not in evaluated:
        # Saved first: the best-checkpoint archive copies the latest one.
        self.save()
        self._stop_if_diverged(stage, step)
        history.append(self._evaluate_and_record(stage))
        evaluated.add(step)
        # Evaluation time is not training time: restart the ETA clock.
        stage_start, stage_start_step = time.time(), step
      elif step % save_every == 0 and step < stage.max_steps:
        self.save()
        self._stop_if_diverged(stage, step)
    summary.flush()
    return step

  def _stop_if_diverged(self, stage, step):
    if self.loss_watch.gave_up:
      raise self._diverged(stage, step)

  def _diverged(self, stage, step) -> Diverged:
    """The error that stops a diverged run, with the way to go on."""
    last_good = self.manager.latest_checkpoint
    lr_base = self.config.train.lr_base
    return Diverged(
        divergence.divergence_message(
            self.loss_watch.last_loss, self.loss_watch.exploding_since, step,
            stage.index + 1, last_good, lr_base, self.loss_watch.bound),
        os.path.basename(last_good) if last_good else None,
        divergence.resume_changes(lr_base))

  def _evaluate_and_record(self, stage=None,
                           record: bool = True) -> Dict[str, object]:
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
    if not record:
      return metrics
    writer = self.run_dir.summary_writer('eval')
    with writer.as_default(step=metrics['global_step']):
      tf.summary.scalar('eval/acc_top1', metrics['eval/acc_top1'])
      tf.summary.scalar('eval/acc_top5', metrics['eval/acc_top5'])
    writer.flush()
    self.run_dir.append_metrics(metrics, self.config)
    if self.archive_ckpt:
      self.run_dir.archive_if_best(metrics, self.manager.latest_checkpoint)
    return metrics

  def evaluate_and_record(self, record: bool = True) -> Dict[str, object]:
    """Evaluates the restored weights and appends to metrics.json (only
    prints them when not `record`)."""
    return self._evaluate_and_record(
        progressive.stage_at_step(self.stages,
                                  int(self.global_step.numpy()) - 1), record)


def _is_chief(strategy) -> bool:
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  cluster = resolver.cluster_spec().as_dict()
  if 'chief' in cluster:
    return resolver.task_type == 'chief'
  return resolver.task_type == 'worker' and resolver.task_id == 0


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
      if path:
        print(f'interrupted: saved {path}; rerun the same command to resume',
              flush=True)
      else:
        print('interrupted while the loss was exploding: nothing saved; '
              + divergence.resume_advice(
                  self.trainer.manager.latest_checkpoint,
                  self.trainer.config.train.lr_base), flush=True)
    return False
