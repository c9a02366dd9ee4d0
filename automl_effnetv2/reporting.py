"""What a run reports: each log interval's training values (history,
TensorBoard, one console line with the ETA) and each evaluation (console,
TensorBoard, metrics.json, the best-checkpoint archive)."""
import time
from typing import Dict, Optional, Tuple

import tensorflow as tf

from automl_effnetv2 import progressive


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f'{hours}h{minutes:02d}m{secs:02d}s' if hours else f'{minutes}m{secs:02d}s'


def stage_banner(stage: progressive.Stage, num_stages: int, step: int) -> str:
  return (f'stage {stage.index + 1}/{num_stages}: image size '
          f'{stage.image_size}, RandAugment magnitude {stage.ram:.2f}, mixup '
          f'{stage.mixup_alpha:.3f}, cutmix {stage.cutmix_alpha:.3f}, dropout '
          f'{stage.dropout_rate}, steps {step}->{stage.max_steps}')


def report_interval(trainer, stage: progressive.Stage, step: int,
                    num_steps: int, loss: float, elapsed: float, summary,
                    clock_start: Tuple[float, int]) -> Dict[str, float]:
  """Records the `num_steps` steps that ended at `step` with mean `loss`
  (the other values from the training sums of `trainer.steps`); returns
  them. The ETA is at the speed since
  `clock_start` (time, step)."""
  sums = trainer.steps
  count = max(float(sums.example_count.result()), 1.0)
  values = {
      'loss': loss,
      'xent': float(sums.xent_sum.result()) / num_steps,
      'accuracy': float(sums.correct_sum.result()) / count,
      'learning_rate': float(trainer.objective.learning_rate()),
      'weight_decay': float(trainer.objective.weight_decay()),
      'images_per_second': (num_steps * trainer.config.train.batch_size /
                            max(elapsed, 1e-9)),
      'image_size': stage.image_size,
      'randaug_magnitude': stage.ram,
      'mixup_alpha': stage.mixup_alpha,
      'cutmix_alpha': stage.cutmix_alpha,
      'dropout_rate': trainer.model.dropout_rate,
      'stage': stage.index + 1,
  }
  trainer.history.append(dict(values, step=step))
  with summary.as_default(step=step):
    for name, value in values.items():
      tf.summary.scalar(f'train/{name}', value)
  total_steps = trainer.plan.total_steps
  start_time, start_step = clock_start
  rate = (step - start_step) / max(time.time() - start_time, 1e-9)
  eta = (total_steps - step) / max(rate, 1e-9)
  print(f'stage {stage.index + 1}/{len(trainer.plan.stages)} step '
        f'{step}/{total_steps} loss {loss:.4f} acc '
        f'{values["accuracy"]:.4f} lr {values["learning_rate"]:.5f} '
        f'{values["images_per_second"]:.1f} img/s ETA '
        f'{format_duration(eta)}', flush=True)
  return values


def evaluate_and_record(trainer, stage: Optional[progressive.Stage],
                        record: bool = True) -> Dict[str, object]:
  """Evaluates the weights as they are; records the result (TensorBoard,
  metrics.json, the archive of the best checkpoint) unless not `record`,
  when it is only printed."""
  metrics = trainer.evaluate()
  if trainer.eval_name:
    metrics['eval_name'] = trainer.eval_name
  if stage is not None:
    metrics['stage'] = stage.index + 1
  seconds = float(trainer.train_seconds.numpy())
  metrics['total_steps'] = trainer.plan.total_steps
  metrics['epoch'] = metrics['global_step'] / trainer.plan.steps_per_epoch
  metrics['train_seconds'] = seconds
  metrics['train_images_per_second'] = (
      metrics['global_step'] * trainer.config.train.batch_size / seconds
      if seconds else None)
  metrics['wall_time'] = time.time()
  print(f"eval at step {metrics['global_step']}: top-1 "
        f"{metrics['eval/acc_top1']:.4f} top-5 "
        f"{metrics['eval/acc_top5']:.4f} ({metrics['eval/num_examples']} "
        f"images, {'EMA' if metrics['eval/ema'] else 'raw'} weights)",
        flush=True)
  if not record:
    return metrics
  writer = trainer.run_dir.summary_writer('eval')
  with writer.as_default(step=metrics['global_step']):
    tf.summary.scalar('eval/acc_top1', metrics['eval/acc_top1'])
    tf.summary.scalar('eval/acc_top5', metrics['eval/acc_top5'])
  writer.flush()
  trainer.run_dir.append_metrics(metrics, trainer.config)
  if trainer.archive_ckpt:
    trainer.run_dir.archive_if_best(metrics, trainer.checkpoints.latest)
  return metrics


def evaluate_restored(trainer, record: bool = True) -> Dict[str, object]:
  """`evaluate_and_record` of the restored weights, under the stage that
  trained their last step."""
  step = int(trainer.global_step.numpy())
  return evaluate_and_record(trainer, trainer.plan.stage_at_step(step - 1),
                             record)
