"""The stage loop of progressive learning: for each stage not yet done, its
settings, then training to its last step, with log intervals, periodic
checkpoints, evaluations and the divergence check; a stage ends on a
checkpoint."""
import os
import time
from typing import Dict, List

from absl import logging

from automl_effnetv2 import checkpoints as checkpoints_lib
from automl_effnetv2 import divergence
from automl_effnetv2 import progressive
from automl_effnetv2 import reporting
from automl_effnetv2 import run_dir as run_dir_lib
from automl_effnetv2 import train_errors


class StageLoop:
  """Trains `trainer` from `step` to the end of its plan.

  Evaluates at the plan's evaluation points, and after every stage when
  `eval_every_stage`; evaluations go to `history` (metrics.json's).
  """

  def __init__(self, trainer, eval_every_stage: bool = False):
    self.trainer = trainer
    self.plan = trainer.plan
    self.eval_every_stage = eval_every_stage
    self.history: List[Dict] = []
    self.evaluated = set()

  def run(self, step: int) -> Dict[str, object]:
    trainer, plan = self.trainer, self.plan
    self.summary = trainer.run_dir.summary_writer('train')
    self.history = run_dir_lib.read_metrics(trainer.model_dir).get('evals', [])
    self.evaluated = {record.get('global_step') for record in self.history}
    logging.info('training %d steps (%.2f epochs), %d stages; at step %d',
                 plan.total_steps, trainer.config.train.epochs,
                 len(plan.stages), step)
    due = set(trainer.eval_points)
    if self.eval_every_stage:
      due.update(stage.max_steps for stage in plan.stages)
    with checkpoints_lib.saved_on_interrupt(trainer.checkpoints):
      # A run stopped between a save and its evaluation (killed, or
      # interrupted during the evaluation) evaluates first thing on resume.
      if step in due and step not in self.evaluated:
        self._evaluate(plan.stage_at_step(step - 1), step)
      for stage in plan.stages:
        if step >= stage.max_steps:
          continue
        step = self._train_stage(stage, step)
        if not trainer.checkpoints.save():  # A stage must end on a checkpoint.
          raise self._diverged(stage, step)
        if self.eval_every_stage and step not in self.evaluated:
          self._evaluate(stage, step)
    result = {'global_step': step, 'total_steps': plan.total_steps}
    if self.history:
      result.update(self.history[-1])
    return result

  def _evaluate(self, stage, step):
    self.history.append(reporting.evaluate_and_record(self.trainer, stage))
    self.evaluated.add(step)

  def _train_stage(self, stage: progressive.Stage, step: int) -> int:
    trainer = self.trainer
    runtime = trainer.config.runtime
    iterator = trainer.stage_iterator(stage, step)
    print(reporting.stage_banner(stage, len(self.plan.stages), step),
          flush=True)
    log_every = max(1, int(runtime.log_step_count_steps))
    save_every = max(1, int(runtime.save_checkpoints_steps))
    clock_start = (time.time(), step)
    eval_points = [p for p in trainer.eval_points
                   if step < p < stage.max_steps]
    while step < stage.max_steps:
      next_stop = min([stage.max_steps, (step // log_every + 1) * log_every,
                       (step // save_every + 1) * save_every] +
                      [p for p in eval_points if p > step])
      trainer.steps.reset_train_sums()
      started = time.time()
      trainer.run_steps(iterator, next_stop - step)
      elapsed = time.time() - started
      trainer.train_seconds.assign_add(elapsed)
      num_steps, step = next_stop - step, next_stop
      loss = float(trainer.steps.loss_sum.result()) / num_steps
      trainer.loss_watch.observe(loss, step - num_steps)
      reporting.report_interval(trainer, stage, step, num_steps, loss,
                                elapsed, self.summary, clock_start)
      self._stop_if_diverged(stage, step)
      if step in eval_points and step not in self.evaluated:
        # Saved first: the best-checkpoint archive copies the latest one.
        trainer.checkpoints.save()
        self._stop_if_diverged(stage, step)
        self._evaluate(stage, step)
        # Evaluation time is not training time: restart the ETA clock.
        clock_start = (time.time(), step)
      elif step % save_every == 0 and step < stage.max_steps:
        trainer.checkpoints.save()
        self._stop_if_diverged(stage, step)
    self.summary.flush()
    return step

  def _stop_if_diverged(self, stage, step):
    if self.trainer.loss_watch.gave_up:
      raise self._diverged(stage, step)

  def _diverged(self, stage, step) -> train_errors.Diverged:
    """The error that stops a diverged run, with the way to go on."""
    watch = self.trainer.loss_watch
    last_good = self.trainer.checkpoints.latest
    lr_base = self.trainer.config.train.lr_base
    return train_errors.Diverged(
        divergence.divergence_message(
            watch.last_loss, watch.exploding_since, step, stage.index + 1,
            last_good, lr_base, watch.bound),
        os.path.basename(last_good) if last_good else None,
        divergence.resume_changes(lr_base))
