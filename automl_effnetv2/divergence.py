"""Tells an exploding training loss from a noisy one, and what to do about it.

A checkpoint is worth resuming from only if its weights are sane. A finite
loss is not enough: a diverging run passes through 1e3, 1e9, 1e17 before it
overflows. Sane means within `EXPLOSION_FACTOR` times the chance loss (the
loss of all-zero logits, ln(num_classes) for softmax cross-entropy). The
bound is fixed rather than relative to a running mean of the loss: a slow
divergence drags a running mean up with it and would pass as sane, while no
sane run, at any stage or regularization, is four times worse than guessing.

Two losses are judged. The mean loss of each log interval, as training
reports it, stops the run once it is not finite or has stayed above the
bound for `PATIENCE` intervals in a row. And at each save, the loss of the
weights about to be saved (the trainer re-evaluates it on a fixed batch):
the loss logged for a step was computed before that step's update, and one
update at a huge rate can multiply the weights by 1e5, so a checkpoint is
written only when its own weights are finite and within the bound. The
previous checkpoint therefore stays the last good one until a newer one is
known to be good.

When the run stops, `divergence_message` names the last good checkpoint (or
says there is none) and the change that continues from it: `--resume_from`
(see main.py) with a learning rate that does not diverge again
(`safer_lr_base`).
"""
import math
from typing import Dict, Optional

from automl_effnetv2 import hparams

# Four times the chance loss is far worse than guessing: no sane run is there.
EXPLOSION_FACTOR = 4.0

# Log intervals in a row above the bound before the run stops: a spike may
# come back, an explosion does not, and training on would only waste time.
PATIENCE = 3

# What --resume_from may change: the optimizer's step size and clipping, which
# the checkpointed state does not depend on.
RESUMABLE_CHANGES = ('train.lr_base', 'train.lr_min', 'train.lr_sched',
                     'train.lr_decay_epoch', 'train.lr_decay_factor',
                     'train.lr_warmup_epoch', 'train.gclip')


class LossWatch:
  """Judges losses as sane or exploding, and when to give up."""

  def __init__(self, chance_loss: float, factor: float = EXPLOSION_FACTOR,
               patience: int = PATIENCE):
    self.bound = factor * float(chance_loss)
    self.patience = patience
    self.healthy = True
    self.exploding_since = 0  # First step of the interval that exploded.
    self.exploding_intervals = 0  # In a row, up to the last observation.
    self.last_loss = float('nan')

  def sane(self, loss: float) -> bool:
    return math.isfinite(loss) and loss <= self.bound

  def observe(self, loss: float, first_step: int = 0) -> bool:
    """Records a loss of the weights from `first_step` on; True when it is
    finite and within the bound."""
    was_healthy = self.healthy
    self.healthy = self.sane(loss)
    self.last_loss = loss
    if was_healthy and not self.healthy:
      self.exploding_since = first_step
    self.exploding_intervals = 0 if self.healthy else (
        self.exploding_intervals + 1)
    return self.healthy

  @property
  def gave_up(self) -> bool:
    """The loss is not finite, or above the bound for `patience` in a row."""
    return not self.healthy and (not math.isfinite(self.last_loss) or
                                 self.exploding_intervals >= self.patience)


def safer_lr_base(lr_base: float) -> float:
  """The train.lr_base to go on with: a quarter of the one that diverged,
  and never above base_config's (upstream's ImageNet rate, per 256 images),
  so that one rerun suffices even after a rate off by orders of magnitude."""
  return float(f'{min(lr_base / 4, hparams.base_config.train.lr_base):.3g}')


def resume_changes(lr_base: float) -> Dict[str, float]:
  """The config change that a rerun after divergence makes."""
  return {'train.lr_base': safer_lr_base(lr_base)}


def resume_advice(last_good: Optional[str], lr_base: float) -> str:
  """The command-line change that continues a diverged run."""
  change = ','.join(f'{k}={v}' for k, v in resume_changes(lr_base).items())
  if not last_good:
    return f'no good checkpoint was saved; start again with {change}'
  name = last_good.rsplit('/', 1)[-1]
  return (f'the last good checkpoint is {name}: go on from it with '
          f'--resume_from={name} and {change} (--resume_from lets only '
          + ', '.join(RESUMABLE_CHANGES) + ' change)')


def divergence_message(loss: float, first_step: int, last_step: int,
                       stage: int, last_good: Optional[str], lr_base: float,
                       bound: float) -> str:
  if math.isfinite(loss):
    what = (f'exploded between steps {first_step} and {last_step} (stage '
            f'{stage}) and was {loss:.4g} at step {last_step} (sane: <= '
            f'{bound:.4g})')
  else:
    what = (f'became {loss} between steps {first_step} and {last_step} '
            f'(stage {stage})')
  return (f'the training loss {what}; checkpoints are saved only when their '
          'weights are sane, so ' + resume_advice(last_good, lr_base))
