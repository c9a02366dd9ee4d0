"""Tells an exploding training loss from a noisy one, and what to do about it.

A checkpoint is worth resuming from only if the loss was sane when it was
written. A finite loss is not enough: a diverging run passes through 1e3,
1e9, 1e17 before it overflows. The trainer therefore saves only while the
mean loss of each log interval stays within `EXPLOSION_FACTOR` times the
chance loss (the loss of all-zero logits, ln(num_classes) for softmax
cross-entropy). The bound is fixed rather than relative to a running mean of
the loss: a slow divergence drags a running mean up with it and would pass
as sane, while no sane run, at any stage or regularization, is four times
worse than guessing.

When the loss explodes, no checkpoint is written; when it comes back under the
bound, saving goes on. A loss that is not finite, or still exploding where a
stage must end with a checkpoint, stops training with `divergence_message`:
the last good checkpoint and the command that resumes from it with a smaller
learning rate (`--resume_from`, see main.py).
"""
import math
from typing import Optional

# Four times the chance loss is far worse than guessing: no sane run is there.
EXPLOSION_FACTOR = 4.0

# What --resume_from may change: the optimizer's step size and clipping, which
# the checkpointed state does not depend on.
RESUMABLE_CHANGES = ('train.lr_base', 'train.lr_min', 'train.lr_sched',
                     'train.lr_decay_epoch', 'train.lr_decay_factor',
                     'train.lr_warmup_epoch', 'train.gclip')


class LossWatch:
  """Judges each log interval's mean loss as sane or exploding."""

  def __init__(self, chance_loss: float, factor: float = EXPLOSION_FACTOR):
    self.bound = factor * float(chance_loss)
    self.healthy = True
    self.exploding_since = 0  # First step of the interval that exploded.

  def observe(self, loss: float, first_step: int = 0) -> bool:
    """Records the mean loss of an interval that began at `first_step`;
    True when it is finite and within the bound."""
    was_healthy = self.healthy
    self.healthy = math.isfinite(loss) and loss <= self.bound
    if was_healthy and not self.healthy:
      self.exploding_since = first_step
    return self.healthy


def resume_advice(last_good: Optional[str], lr_base: float) -> str:
  """The command-line change that continues a diverged run."""
  lower = f'train.lr_base={lr_base / 4:.3g}'
  if not last_good:
    return (f'no good checkpoint was saved; rerun with {lower} (or set '
            'train.gclip, e.g. train.gclip=1.0) in --hparam_str')
  name = last_good.rsplit('/', 1)[-1]
  return (f'the last good checkpoint is {name}: rerun with '
          f'--resume_from={name} and a smaller step in --hparam_str, e.g. '
          f'{lower} or train.gclip=1.0 (--resume_from lets only '
          + ', '.join(RESUMABLE_CHANGES) + ' change)')


def divergence_message(loss: float, first_step: int, last_step: int,
                       stage: int, last_good: Optional[str], lr_base: float,
                       bound: float) -> str:
  if math.isfinite(loss):
    what = (f'exploded between steps {first_step} and {last_step} (stage '
            f'{stage}) and was {loss:.4g} at the end of the stage (sane: '
            f'<= {bound:.4g})')
  else:
    what = (f'became {loss} between steps {first_step} and {last_step} '
            f'(stage {stage})')
  return (f'the training loss {what}; checkpoints are saved only while it '
          'is sane, so ' + resume_advice(last_good, lr_base))
