"""The ways training stops short, each with what to do next."""
from typing import Dict, Optional


class TrainingInterrupted(KeyboardInterrupt):
  """SIGTERM (or Ctrl+C) stopped training; a checkpoint has been saved."""

  def __init__(self, signum):
    super().__init__(f'signal {signum}')
    self.signum = signum


class DatasetError(ValueError):
  """The dataset cannot be read as configured; the message says the fix.

  The one family of data errors: a dataset's own (local_data.DataFilesError,
  for files on disk) subclass it, so main.py reports every dataset's
  problems as one line without a clause per dataset.
  """


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
