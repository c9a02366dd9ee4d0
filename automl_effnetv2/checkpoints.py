"""A run's checkpoints: saving (only weights that pass the loss watch),
restoring the newest readable one or the one --resume_from names, starting
from pretrained weights, and the save that SIGTERM or Ctrl+C triggers."""
import os
import signal
import tempfile
from typing import Callable, Dict, Optional

from absl import logging
import tensorflow as tf

from automl_effnetv2 import divergence
from automl_effnetv2 import hparams
from automl_effnetv2 import pretrained
from automl_effnetv2 import run_dir as run_dir_lib
from automl_effnetv2 import train_errors


class Checkpoints:
  """Saves and restores `trackables` (model, optimizer, step, ...) in a run
  folder.

  Args:
    config: the run config (runtime.keep_checkpoint_*, train.ft_init_*).
    run_dir: the run folder (a run_dir.RunDir).
    trackables: what a checkpoint holds, by name.
    loss_watch: the divergence.LossWatch that judges the weights.
    weights_loss: returns the loss of the weights as they are now.
    model, ema: where pretrained weights go.
  """

  def __init__(self, config: hparams.Config, run_dir: run_dir_lib.RunDir,
               trackables: Dict[str, object],
               loss_watch: divergence.LossWatch,
               weights_loss: Callable[[], float], model, ema):
    self.config = config
    self.run_dir = run_dir
    self.trackables = trackables
    self.loss_watch = loss_watch
    self.weights_loss = weights_loss
    self.model = model
    self.ema = ema
    self.global_step = trackables['step']
    self.checkpoint = tf.train.Checkpoint(**trackables)
    # Under MultiWorkerMirroredStrategy every worker saves (saving is a
    # collective), but only the chief writes to model_dir.
    self._save_dir = (run_dir.path if run_dir.is_chief else
                      tempfile.mkdtemp(prefix='effnetv2_worker_ckpt_'))
    self._pretrained_from = None
    self.reread()

  def reread(self):
    """Reads the folder's checkpoint state as it is now (after checkpoints
    were moved aside)."""
    runtime = self.config.runtime
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, self._save_dir,
        max_to_keep=runtime.keep_checkpoint_max,
        keep_checkpoint_every_n_hours=runtime.keep_checkpoint_every_n_hours)

  @property
  def latest(self) -> Optional[str]:
    return self.manager.latest_checkpoint

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
    with run_dir_lib.writing(self.run_dir.path):
      path = self.manager.save(checkpoint_number=self.global_step)
    logging.info('saved %s', path)
    return path

  def restore(self, resume_from: Optional[str] = None,
              set_aside_damaged: bool = False) -> int:
    """Restores the newest readable checkpoint (or `resume_from`, a name like
    'ckpt-150'); returns the step. Without any, starts from
    train.ft_init_ckpt when the config names one.

    Checkpoints that do not read back whole are skipped with a message, and
    moved to damaged/ when `set_aside_damaged` (the folder's owner).
    """
    model_dir = self.run_dir.path
    candidates = [self._named_checkpoint(resume_from)] if resume_from else None
    latest, skipped = self.run_dir.loadable_checkpoint(candidates)
    for path, problem in skipped:
      print(f'skipped checkpoint {os.path.basename(path)}: it cannot be read '
            f'({problem})', flush=True)
    if skipped and not latest:
      names = ', '.join(os.path.basename(p) for p, _ in skipped)
      raise train_errors.TrainingError(
          f'no checkpoint in {model_dir} can be read ({names} damaged); '
          f'copy a good one back (archive/ keeps the best), or remove the '
          'ckpt-* files and the checkpoint file to start over')
    if skipped and set_aside_damaged and not resume_from:
      self.run_dir.set_aside([p for p, _ in skipped], run_dir_lib.DAMAGED_DIR)
      print(f'moved the damaged checkpoints to {run_dir_lib.DAMAGED_DIR}/; '
            f'resuming from {os.path.basename(latest)}', flush=True)
      self.reread()
    if latest:
      saved = {name.split('/')[0] for name, _ in tf.train.list_variables(latest)}
      # Checkpoints written before training time was recorded lack it; the
      # time then counts from this process.
      checkpoint = (self.checkpoint if 'train_seconds' in saved else
                    tf.train.Checkpoint(**{
                        k: v for k, v in self.trackables.items()
                        if k != 'train_seconds'}))
      try:
        checkpoint.restore(latest).assert_existing_objects_matched()
      except (AssertionError, ValueError, tf.errors.OpError) as e:
        reason = str(e).strip().splitlines()[0][:200]
        raise train_errors.TrainingError(
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
      raise train_errors.TrainingError(
          f'--resume_from={name}: no such checkpoint in {self.run_dir.path}; '
          'there are ' + (', '.join(os.path.basename(p) for p in listed)
                          or 'none'))
    return path

  def _init_from_pretrained(self, path):
    """Loads train.ft_init_ckpt once; weights that do not fit are refused."""
    if self._pretrained_from == path:
      return
    try:
      summary = pretrained.load_pretrained(
          self.model, path, use_ema=bool(self.config.train.ft_init_ema))
    except pretrained.PretrainedError as e:
      raise train_errors.TrainingError(f'train.ft_init_ckpt: {e}') from e
    if self.ema:
      self.ema.reset_to()
    self._pretrained_from = path
    for line in summary:
      print(line, flush=True)


class saved_on_interrupt:  # pylint: disable=invalid-name
  """Saves a checkpoint when SIGINT/SIGTERM stop training between loops."""

  def __init__(self, checkpoints: Checkpoints):
    self.checkpoints = checkpoints
    self._previous = None

  def __enter__(self):
    def handler(signum, frame):
      raise train_errors.TrainingInterrupted(signum)
    try:
      self._previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # Not the main thread.
      self._previous = None
    return self

  def __exit__(self, exc_type, exc, tb):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
    if isinstance(exc, KeyboardInterrupt):  # TrainingInterrupted included.
      path = self.checkpoints.save()
      if path:
        print(f'interrupted: saved {path}; rerun the same command to resume',
              flush=True)
      else:
        print('interrupted while the loss was exploding: nothing saved; '
              + divergence.resume_advice(
                  self.checkpoints.latest,
                  self.checkpoints.config.train.lr_base), flush=True)
    return False
