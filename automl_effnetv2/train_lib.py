"""The TF2 trainer that replaces upstream's TPUEstimator model_fn and loop.

One `Trainer` owns the model, optimizer, EMA and checkpoints of a run in
`model_dir`, under a `tf.distribute` strategy, and builds each stage's input
pipeline from the current step. Its run plan (progressive.run_plan) says
what each stage trains with. Everything a resumed run needs (weights,
optimizer slots, EMA, random-number state, step) is in the checkpoint, and the
input stream is a function of the step, so a killed run restarted with the
same command continues exactly where the last checkpoint left it.

The other parts of training, each in its module: objective.py (loss and
rates), train_step.py (the compiled steps), checkpoints.py (save, restore,
interrupts), resume.py (the run folder protocol), stage_loop.py (the stages),
reporting.py (logs, summaries, metrics.json).
"""
import os
import re
import time
from typing import Dict, Optional

import keras
import tensorflow as tf

from automl_effnetv2 import augment_spec
from automl_effnetv2 import checkpoints as checkpoints_lib
from automl_effnetv2 import datasets
from automl_effnetv2 import divergence
from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import export
from automl_effnetv2 import hparams
from automl_effnetv2 import objective as objective_lib
from automl_effnetv2 import progressive
from automl_effnetv2 import registry
from automl_effnetv2 import resume
from automl_effnetv2 import run_dir as run_dir_lib
from automl_effnetv2 import strategy_choice
from automl_effnetv2 import train_errors
from automl_effnetv2 import train_step
from automl_effnetv2 import utils

STRATEGIES = strategy_choice.STRATEGIES


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


def _is_chief(strategy) -> bool:
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  cluster = resolver.cluster_spec().as_dict()
  if 'chief' in cluster:
    return resolver.task_type == 'chief'
  return resolver.task_type == 'worker' and resolver.task_id == 0


def _one_local_cpu(strategy) -> bool:
  """True when the strategy's one replica is this process's CPU."""
  if strategy.num_replicas_in_sync != 1 or isinstance(
      strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return False
  devices = getattr(strategy.extended, 'worker_devices', ())
  return len(devices) == 1 and 'CPU' in devices[0].upper()


def distribute_dataset(strategy, dataset_fn):
  """The batches of `dataset_fn` (as `distribute_datasets_from_function`
  takes it), to iterate and hand to `strategy.run`.

  With one replica on the local CPU the dataset is used as it is: the same
  batches, but on a 2-core AMD EPYC the mere existence of a distributed
  dataset's iterator in the process made every training step about twice
  as slow (docs/upstream_vs_port.md, "Speed"). With several replicas or on
  an accelerator it is distributed: that splits the batch and prefetches to
  the devices.
  """
  if _one_local_cpu(strategy):
    return dataset_fn(tf.distribute.InputContext())
  return strategy.distribute_datasets_from_function(dataset_fn)


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
    self._probe_images = None  # The fixed batch that judges the weights.
    self.strategy = strategy or build_strategy(config.runtime.strategy,
                                               config.runtime.tpu)
    self.num_replicas = self.strategy.num_replicas_in_sync
    train = config.train
    if train.batch_size % self.num_replicas:
      raise train_errors.TrainingError(
          f'train.batch_size={train.batch_size} is not divisible by the '
          f'{self.num_replicas} replicas; pick a multiple')
    self.train_split = train.split or 'train'
    self.eval_split = config.eval.split or 'eval'
    try:
      self.plan = progressive.run_plan(config)
      # Read and checked once; the stages carry it at their magnitudes.
      self.augment = augment_spec.AugmentSpec.from_config(config.data)
      # Steps after which training pauses for an evaluation (eval.every_*).
      self.eval_points = progressive.eval_steps(
          int(config.eval.get('every_steps') or 0),
          float(config.eval.get('every_epochs') or 0),
          config.data.splits[self.train_split].num_images, train.batch_size,
          self.plan.total_steps)
    except ValueError as e:
      raise train_errors.TrainingError(str(e)) from e
    self.eval_size = self.plan.eval_size  # Benchmarks evaluate at others.
    self._set_up_device()
    self._build()

  def _set_up_device(self):
    """Precision policy, op determinism and the seeds of the run."""
    runtime = self.config.runtime
    self.policy = utils.precision_policy(
        runtime.mixed_precision, utils.detect_device_kind(self.strategy))
    keras.mixed_precision.set_global_policy(self.policy)
    self.image_dtype = {'mixed_float16': tf.float16,
                        'mixed_bfloat16': tf.bfloat16}.get(self.policy,
                                                           tf.float32)
    if runtime.deterministic:
      tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(int(runtime.seed))

  # -- construction -----------------------------------------------------------
  def _build(self):
    """The model, optimizer, EMA, compiled steps and checkpoints."""
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
      self.objective = objective_lib.Objective(config, self.global_step,
                                               self.plan)
      self.optimizer = utils.build_optimizer(
          config.train.optimizer, learning_rate=self.objective.learning_rate)
      if self.policy == 'mixed_float16':
        self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
      train_variables = self._select_train_variables()
      self.optimizer.build(train_variables)
      self.ema = None
      if config.train.ema_decay and config.train.ema_decay > 0:
        self.ema = utils.ExponentialMovingAverage(
            utils.ema_source_variables(self.model), config.train.ema_decay)
      self.steps = train_step.Steps(
          config, self.strategy, self.model, self.optimizer, self.ema,
          self.global_step, train_variables, self.objective)
    seed_states = [layer.seed_generator.state for layer in self.model.layers
                   if hasattr(layer, 'seed_generator')]
    trackables = dict(model=self.model, optimizer=self.optimizer,
                      step=self.global_step, seed_states=seed_states,
                      train_seconds=self.train_seconds)
    if self.ema:
      trackables['ema'] = self.ema
    self.is_chief = _is_chief(self.strategy)
    self.run_dir = run_dir_lib.RunDir(self.model_dir, self.is_chief)
    # Judges each log interval's loss and the weights of each checkpoint.
    self.loss_watch = divergence.LossWatch(self.objective.chance_loss())
    self.checkpoints = checkpoints_lib.Checkpoints(
        config, self.run_dir, trackables, self.loss_watch,
        lambda: self.steps.weights_loss(self._probe_batch, seed_states),
        self.model, self.ema)

  def _select_train_variables(self):
    variables = self.model.trainable_variables
    pattern = self.config.train.varsexp
    if pattern:
      selected = [v for v in variables
                  if re.match(pattern, utils.variable_path(v))]
      if not selected:
        raise train_errors.TrainingError(
            f'train.varsexp={pattern!r} matches no trainable variable')
      return selected
    return variables

  # -- stages and inputs ------------------------------------------------------
  def _input(self, is_training: bool, settings: progressive.StageSettings,
             split: str, config: Optional[hparams.Config] = None,
             stream: int = 0):
    return datasets.build_dataset_input(
        is_training, settings, config or self.config, split,
        image_dtype=self.image_dtype, data_dir=self.data_dir, stream=stream)

  def _eval_settings(self) -> progressive.StageSettings:
    return progressive.StageSettings(self.eval_size, self.augment)

  def set_stage_dropout(self, stage: progressive.StageSettings):
    """Sets the model's dropout to the stage's: the one stage setting that
    lives in the model, not in the input pipeline."""
    self.model.set_dropout_rate(stage.dropout_rate)

  def stage_input(self, stage: progressive.StageSettings,
                  config: Optional[hparams.Config] = None, stream: int = 0):
    """The training Input of a stage (its size, augmentation and mixing);
    `config` replaces the run's (benchmarks of pipeline options)."""
    return self._input(True, stage, self.train_split, config, stream)

  def stage_iterator(self, stage: progressive.StageSettings, start_step: int,
                     config: Optional[hparams.Config] = None):
    """Sets the stage's dropout; returns its training batches from
    `start_step` on (the stream is a function of the step).

    With train.restart_input_each_stage, a stage of the plan reads its own
    stream from that stream's start, as upstream's stage loop, which builds
    a new input for every stage: the stream of stage k, from the step's
    position in the stage.
    """
    self.set_stage_dropout(stage)
    stream, position = 0, start_step
    if (self.config.train.get('restart_input_each_stage') and
        isinstance(stage, progressive.Stage)):
      stream = stage.index + 1
      position = start_step - self.plan.stage_start(stage)
    inp = self.stage_input(stage, config, stream)
    return iter(distribute_dataset(
        self.strategy,
        inp.distribute_dataset_fn(self.config.train.batch_size, position)))

  def run_steps(self, iterator, num_steps: int):
    """Runs `num_steps` compiled training steps on `iterator`'s batches."""
    self.steps.train_loop(iterator, tf.constant(num_steps, tf.int64))

  def check_inputs(self, is_training: bool = True):
    """Opens the dataset's source, so that missing or damaged data is
    reported before anything is written to the run folder."""
    if is_training in self._inputs_checked:
      return
    settings = progressive.StageSettings(
        self.plan.train_size if is_training else self.eval_size, self.augment)
    inp = self._input(is_training, settings,
                      self.train_split if is_training else self.eval_split)
    inp.make_source_dataset(0, 1)
    self._inputs_checked.add(is_training)

  def _probe_batch(self):
    """The first batch of training images, eval-preprocessed: the same
    images, without augmentation or mixing, each time the weights are
    judged; built once (evaluation pipelines do not cache)."""
    if self._probe_images is None:
      inp = self._input(False, self._eval_settings(), self.train_split)
      self._probe_images = next(iter(distribute_dataset(
          self.strategy,
          inp.distribute_dataset_fn(self.config.train.batch_size))))
    return self._probe_images

  # -- training and evaluation ------------------------------------------------
  def train(self, eval_every_stage: bool = False,
            resume_from: Optional[str] = None) -> Dict[str, object]:
    """Trains to the end of the plan in the locked run folder, resuming if
    possible (resume.train_in_folder)."""
    return resume.train_in_folder(self, eval_every_stage, resume_from)

  def evaluate(self, use_ema: bool = True) -> Dict[str, float]:
    """Top-1/top-5 on the eval split; EMA weights when the run keeps them."""
    inp = self._input(False, self._eval_settings(), self.eval_split)
    dist = distribute_dataset(
        self.strategy, inp.distribute_dataset_fn(self.config.eval.batch_size))
    steps = self.steps
    restore = self.ema.swap_into_model() if (use_ema and self.ema) else None
    try:
      steps.reset_eval_sums()
      started = time.time()
      steps.eval_loop(dist)
      count = float(steps.eval_count.result())
    finally:
      if restore:
        restore()
    if count == 0:
      raise train_errors.TrainingError(
          f'the {self.eval_split} split produced no examples')
    return {
        'eval/acc_top1': float(steps.eval_top1.result()) / count,
        'eval/acc_top5': float(steps.eval_top5.result()) / count,
        'eval/num_examples': int(count),
        'eval/image_size': self.eval_size,
        'eval/ema': bool(use_ema and self.ema),
        'eval/seconds': time.time() - started,
        'global_step': int(self.global_step.numpy()),
    }

  def export_weights(self) -> str:
    """Writes the (EMA) weights for fine-tuning to export/ema.weights.h5."""
    if not self.is_chief:
      return ''
    path = self.run_dir.export_path('ema.weights.h5')
    with export.ema_weights_in(self.model, self.ema):
      with run_dir_lib.writing(path):
        self.model.save_weights(path)
    return path
