"""Progressive learning with adaptive regularization, as pure functions.

Upstream (main.py 441-496 at google/automl a6bb1ff), for stage i of N:
  max_steps_i  = int((i + 1) / N * train_steps)
  image_size_i = int(ibase + (train_size - ibase) * (i + 1) / N)
and when `train.sched` is on:
  RandAugment magnitude_i = linspace(5, data.ram, N)[i]
  mixup_alpha_i, cutmix_alpha_i = linspace(0, alpha, N)[i]
Upstream also computes linspace(0, dropout_rate, N) but never assigns it, so
dropout stays fixed; `train.sched_dropout=True` applies it as the paper says.
With stages = 0 there is a single stage at the full training size.

`run_plan` turns a config into the one `RunPlan` that the trainer, the config
checks and the study tools all read.
"""
import dataclasses
from typing import List, Optional, Tuple

import numpy as np

from automl_effnetv2 import augment_spec
from automl_effnetv2 import registry


@dataclasses.dataclass(frozen=True)
class StageSettings:
  """What a pipeline and the model use: the image size, the per-image
  augmentation (RandAugment at its magnitude), the mixing of a training
  batch and the model's dropout (None: the model's own)."""
  image_size: int
  augment: augment_spec.AugmentSpec = augment_spec.NO_AUGMENTATION
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  dropout_rate: Optional[float] = None

  @property
  def ram(self) -> float:
    """The RandAugment magnitude."""
    return self.augment.magnitude


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stage(StageSettings):
  """One stage of a run: its settings and where it ends."""
  index: int
  max_steps: int  # The stage ends when the global step reaches this.


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """How a run trains, from its config alone: its length, image sizes and
  stages (its ablation applied)."""
  total_steps: int
  steps_per_epoch: float  # Fractional, as the learning-rate schedule's.
  train_size: int  # The full training size, the last stage's.
  eval_size: int
  stages: Tuple[Stage, ...]

  def stage_at_step(self, step: int) -> Optional[Stage]:
    return stage_at_step(self.stages, step)

  def stage_start(self, stage: Stage) -> int:
    """The global step at which `stage` begins."""
    return self.stages[stage.index - 1].max_steps if stage.index else 0


def train_steps(epochs: float, num_train_images: int, batch_size: int,
                min_steps: int = 0) -> int:
  """max(min_steps, epochs * images // batch), upstream's total step count."""
  return int(max(min_steps, int(epochs * num_train_images) // batch_size))


def train_image_size(train_isize, eval_isize) -> int:
  """`train.isize` <= 16 is a ratio of the eval size, rounded down to 16."""
  if train_isize is None:
    return int(eval_isize)
  if train_isize <= 16:
    return int(eval_isize * train_isize) // 16 * 16
  return int(train_isize)


def stage_schedule(config, total_steps: int, train_size: int) -> List[Stage]:
  """The stages of a run, from its config (train, data and model sections)."""
  num_stages = int(config.train.stages or 0)
  data, model = config.data, config.model
  augment = augment_spec.AugmentSpec.from_config(data)
  if num_stages <= 0:
    return [Stage(index=0, max_steps=total_steps, image_size=train_size,
                  augment=augment, mixup_alpha=data.mixup_alpha,
                  cutmix_alpha=data.cutmix_alpha,
                  dropout_rate=model.dropout_rate)]
  ibase = data.ibase or train_size / 2
  if config.train.sched:
    rams = np.linspace(5, data.ram, num_stages)
    mixups = np.linspace(0, data.mixup_alpha or 0, num_stages)
    cutmixes = np.linspace(0, data.cutmix_alpha or 0, num_stages)
  else:
    rams = [data.ram] * num_stages
    mixups = [data.mixup_alpha] * num_stages
    cutmixes = [data.cutmix_alpha] * num_stages
  if config.train.sched and config.train.get('sched_dropout') and (
      model.dropout_rate):
    dropouts = np.linspace(0, model.dropout_rate, num_stages)
  else:
    dropouts = [model.dropout_rate] * num_stages
  stages = []
  for i in range(num_stages):
    ratio = float(i + 1) / float(num_stages)
    stages.append(Stage(
        index=i,
        max_steps=int(ratio * total_steps),
        image_size=int(ibase + (train_size - ibase) * ratio),
        augment=augment.at_magnitude(float(rams[i])),
        mixup_alpha=float(mixups[i] or 0),
        cutmix_alpha=float(cutmixes[i] or 0),
        dropout_rate=None if dropouts[i] is None else float(dropouts[i])))
  return stages


def run_plan(config, total_steps: Optional[int] = None) -> RunPlan:
  """The plan of the run `config` describes; `total_steps` stretches its
  stages over another length (the study's equal-time runs)."""
  train = config.train
  num_images = config.data.splits[train.split or 'train'].num_images
  if total_steps is None:
    total_steps = train_steps(train.epochs, num_images, train.batch_size,
                              train.min_steps or 0)
  train_size = train_image_size(train.isize, config.eval.isize)
  stages = stage_schedule(config, total_steps, train_size)
  stages = apply_ablation(stages, train.ablation)
  return RunPlan(total_steps=total_steps,
                 steps_per_epoch=num_images / train.batch_size,
                 train_size=train_size,
                 eval_size=int(config.eval.isize or train_size),
                 stages=tuple(stages))


def eval_steps(every_steps: int, every_epochs: float, num_train_images: int,
               batch_size: int, total_steps: int) -> List[int]:
  """The global steps after which training pauses to evaluate.

  `every_steps` or `every_epochs` (one of them, 0 for none) sets the
  interval; epochs become steps as `train_steps` counts them. The last step
  is left out: the run's final evaluation covers it.
  """
  if every_steps and every_epochs:
    raise ValueError('eval.every_steps and eval.every_epochs are both set; '
                     'set one of them (the other to 0)')
  if every_steps < 0 or every_epochs < 0:
    raise ValueError('eval.every_steps and eval.every_epochs must be >= 0')
  if every_steps:
    points = range(int(every_steps), total_steps, int(every_steps))
  elif every_epochs:
    points, k = [], 1
    while True:
      step = int(k * every_epochs * num_train_images) // batch_size
      if step >= total_steps:
        break
      if step > 0 and (not points or step > points[-1]):
        points.append(step)
      k += 1
  else:
    points = []
  return list(points)


def stage_at_step(stages, step: int) -> Optional[Stage]:
  """The stage that trains step `step` (the first not yet finished), or None
  when training is complete."""
  for stage in stages:
    if step < stage.max_steps:
      return stage
  return None


# -- ablations of progressive learning ----------------------------------------
ABLATIONS = ('none', 'no_progressive', 'fixed_image_size',
             'fixed_regularization', 'constant_weight_decay')


def check_ablation(mode: str) -> str:
  return registry.check_name('ablation', mode, ABLATIONS)


def apply_ablation(stages, mode: str) -> List[Stage]:
  """Switches off the named knob(s); stage boundaries (steps) never change.

  fixed_image_size: every stage trains at the last stage's (full) size.
  fixed_regularization: every stage uses the last stage's RandAugment
    magnitude, mixup, cutmix and dropout (plain progressive resizing).
  no_progressive: both. none / constant_weight_decay: stages unchanged (the
  latter acts on the config, see ablate_config).
  """
  check_ablation(mode)
  last = stages[-1]
  out = []
  for stage in stages:
    if mode in ('fixed_image_size', 'no_progressive'):
      stage = dataclasses.replace(stage, image_size=last.image_size)
    if mode in ('fixed_regularization', 'no_progressive'):
      stage = dataclasses.replace(
          stage, augment=last.augment, mixup_alpha=last.mixup_alpha,
          cutmix_alpha=last.cutmix_alpha, dropout_rate=last.dropout_rate)
    out.append(stage)
  return out


def ablate_config(config, mode: str):
  """Records the mode in the config; constant_weight_decay zeroes the ramp."""
  config.train.ablation = check_ablation(mode)
  if mode == 'constant_weight_decay':
    config.train.weight_decay_inc = 0.0
  return config
