"""Starting or resuming training in a run folder.

The protocol, in order: the inputs open (missing data is reported before
anything is written); pretrained weights that do not fit are refused; the
folder is created and locked; a config that differs from the folder's saved
one is refused (--resume_from may change the optimizer settings of
divergence.RESUMABLE_CHANGES); what an interrupted save left is removed;
the newest readable checkpoint (or the named one) is restored; the record
of --resume_from changes is carried into the config, which is saved; then
the stage loop runs, still under the lock.
"""
import os
from typing import Dict, Optional

import tensorflow as tf

from automl_effnetv2 import divergence
from automl_effnetv2 import reporting
from automl_effnetv2 import run_dir as run_dir_lib
from automl_effnetv2 import stage_loop


def train_in_folder(trainer, eval_every_stage: bool = False,
                    resume_from: Optional[str] = None,
                    final_eval: bool = False,
                    export: bool = False) -> Dict[str, object]:
  """Trains to the end of the plan, resuming if possible; returns the last
  metrics. With `final_eval`, evaluates the final weights; with `export`,
  writes them for fine-tuning; both still under the lock."""
  folder = trainer.run_dir
  trainer.check_inputs()
  if trainer.config.train.ft_init_ckpt and not folder.checkpoints():
    # Refuses weights that do not fit before anything is written.
    trainer.checkpoints.restore()
  folder.create()
  with folder.owned():
    # Checked first: a refused command changes nothing in the folder.
    changed = folder.check_saved_config(
        trainer.config, divergence.RESUMABLE_CHANGES if resume_from else ())
    removed = folder.remove_leftovers()
    if removed:
      print('removed what an interrupted save left: ' + ', '.join(removed),
            flush=True)
    step = trainer.checkpoints.restore(resume_from, set_aside_damaged=True)
    _carry_config_history(trainer, step, resume_from, changed)
    folder.save_config(trainer.config)
    result = stage_loop.StageLoop(trainer, eval_every_stage).run(step)
    if final_eval:
      result.update(reporting.evaluate_restored(trainer))
    if export:
      trainer.export_weights()
  return result


def _carry_config_history(trainer, step, resume_from, changed):
  """Keeps the folder's record of --resume_from changes in the config."""
  folder = trainer.run_dir
  saved = folder.saved_config() if step else None
  history = list(((saved or {}).get('runtime') or {}).get(
      'config_changes') or [])
  if resume_from:
    later = [p for p in folder.checkpoints()
             if run_dir_lib.checkpoint_number(p) > step]
    folder.set_aside(later, run_dir_lib.SUPERSEDED_DIR)
    trainer.checkpoints.reread()
    before = run_dir_lib.flatten(saved or {})
    after = run_dir_lib.flatten(trainer.config.as_dict())
    entry = {'step': step, 'resumed_from': os.path.basename(resume_from),
             'changed': {k: [before.get(k), after.get(k)] for k in changed}}
    if any(k.startswith('train.lr_') for k in changed):
      entry['momentum_reset'] = reset_momentum(trainer.optimizer)
    history.append(entry)
    print(f'resuming from {os.path.basename(resume_from)} at step {step}'
          + ''.join(f'; {k} {before.get(k)} -> {after.get(k)}'
                    for k in changed)
          + ('; momentum reset' if entry.get('momentum_reset') else '')
          + (f'; moved later checkpoints to {run_dir_lib.SUPERSEDED_DIR}/'
             if later else ''), flush=True)
  trainer.config.runtime.config_changes = history or None


def reset_momentum(optimizer) -> bool:
  """Zeroes the optimizer's momentum slots; True if there were any.

  Momentum (RMSProp's mom: learning rate times gradient; TF1 momentum's
  accumulation: gradients) carries the diverging stretch's huge steps or
  gradients, so without a reset it keeps pushing the weights the wrong way
  for a few dozen steps after the rate is lowered.
  """
  momentums = [v for v in optimizer.variables
               if v.path.endswith(('_momentum', '_accumulation'))]
  for variable in momentums:
    variable.assign(tf.zeros_like(variable))
  return bool(momentums)
