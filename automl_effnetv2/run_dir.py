"""The run folder (`model_dir`): who may write it, and what it holds.

A training run owns its folder: an exclusive `flock` on `run.lock`, taken
before anything else is written and held until the process ends, so two
trainers never mix their configs, checkpoints or metrics. The kernel drops the
lock when its process dies, so a folder left by a killed run is taken over
without any clean-up by hand. The lock file records the holder's pid, host and
start time, which is what a refused second writer is told.

Everything else here is the folder's bookkeeping, kept out of the trainer:
the saved config and its check on resume, metrics.json (replaced atomically,
never appended in place), the archive of the best checkpoint, the export
path, summary writers, the removal of what an interrupted save leaves behind
(on resume, and at once when a write fails while the folder is owned), and
the choice of the newest checkpoint that can actually be read.

Every write goes through `writing`, which turns an OS error (read-only
folder, full disk, a file where a folder belongs) into one `RunDirError` line
that names the path and the fix.
"""
import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import tensorflow as tf

from automl_effnetv2 import divergence
from automl_effnetv2 import hparams
from automl_effnetv2 import utils

CONFIG_FILE = 'config.yaml'
METRICS_FILE = 'metrics.json'
LOCK_FILE = 'run.lock'
BEST_OBJECTIVE_FILE = 'best_objective.txt'
ARCHIVE_DIR = 'archive'
EXPORT_DIR = 'export'
DAMAGED_DIR = 'damaged'  # Checkpoints that failed to load, kept for a look.
SUPERSEDED_DIR = 'superseded'  # Checkpoints after a --resume_from point.

_CHECKPOINT_NAME = re.compile(r'^ckpt-(\d+)(?:\.index|\.data-\d+-of-\d+)$')
_TEMP_CHECKPOINT_DIR = re.compile(r'^ckpt-\d+_temp$')
# Written next to their target and renamed over it; one left behind is the
# trace of a process killed (or a disk filled) half-way through the write.
_TEMP_FILES = re.compile(r'^(checkpoint\.tmp.*|.*\.tmp)$')


class RunDirError(RuntimeError):
  """The run folder cannot be used as asked; the message says the fix."""


class RunDirBusy(RunDirError):
  """Another process holds the folder's lock."""


def read_metrics(model_dir: str) -> Dict:
  """metrics.json of a run as a dict ({} when the run has not evaluated)."""
  path = os.path.join(model_dir, METRICS_FILE)
  if not os.path.exists(path):
    return {}
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def flatten(tree, prefix='') -> Dict[str, object]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[prefix + key] = value
  return out


def config_differences(saved: dict, current: dict,
                       ignore_prefixes=('runtime.',)) -> List[str]:
  """Keys whose values differ, outside the runtime section.

  A key the saved config lacks counts as its base_config default: it was
  added to base_config after that run started.
  """
  a, b = flatten(saved), flatten(current)
  defaults = flatten(hparams.base_config.as_dict())
  a.update({k: defaults[k] for k in b if k not in a and k in defaults})
  return sorted(k for k in set(a) | set(b)
                if a.get(k) != b.get(k) and not k.startswith(ignore_prefixes))


def _fix_for(error: OSError) -> str:
  if error.errno == errno.ENOSPC:
    return ('free some space, then rerun the same command: it resumes from '
            'the last checkpoint and removes partial files')
  if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
    return 'pass a --model_dir in a writable place'
  if error.errno in (errno.ENOTDIR, errno.EEXIST):
    return 'pass a --model_dir that is a folder (or does not exist yet)'
  return 'check the folder, or pass another --model_dir'


@contextlib.contextmanager
def writing(path: str):
  """Turns a failed write of `path` into one RunDirError line."""
  try:
    yield
  except OSError as e:
    raise RunDirError(f'cannot write {path}: {e.strerror or e}; '
                      f'{_fix_for(e)}') from e
  except tf.errors.OpError as e:  # TensorFlow's own file writes.
    # 'path/part-00000.tempstate123; No space left on device [Op:SaveV2]'
    reason = utils.op_error_reason(e)
    code = {tf.errors.ResourceExhaustedError: errno.ENOSPC,
            tf.errors.PermissionDeniedError: errno.EACCES}.get(type(e), 0)
    raise RunDirError(f'cannot write {path}: {reason}; '
                      f'{_fix_for(OSError(code, reason))}') from e


def write_json_atomically(path: str, record):
  """Writes JSON to a temporary name and renames it: never half a file."""
  tmp = path + '.tmp'
  with writing(path):
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def checkpoint_number(path: str) -> int:
  return int(path.rsplit('-', 1)[-1])


class RunDir:
  """One run's folder. Only the chief of a multi-worker run writes to it.

  Args:
    path: the folder (created by `create`, not by the constructor).
    is_chief: False for the other workers of a multi-worker run: they take
      no lock and write nothing here.
  """

  def __init__(self, path: str, is_chief: bool = True):
    self.path = path
    self.is_chief = is_chief
    self._lock_file = None
    self._lock_depth = 0

  def join(self, *names) -> str:
    return os.path.join(self.path, *names)

  # -- the folder itself -------------------------------------------------------
  def check_is_folder(self):
    """A path that exists must be a folder; says so before anything runs."""
    if os.path.exists(self.path) and not os.path.isdir(self.path):
      raise RunDirError(f'--model_dir={self.path} is a file, not a folder; '
                        'pass a folder (it is created if missing)')

  def create(self):
    self.check_is_folder()
    if not self.is_chief:
      return
    with writing(self.path):
      os.makedirs(self.path, exist_ok=True)
      if not os.access(self.path, os.W_OK):
        raise OSError(errno.EACCES, 'Permission denied', self.path)

  # -- ownership ---------------------------------------------------------------
  def holder(self) -> str:
    """Who holds the lock, as recorded in the lock file."""
    try:
      with open(self.join(LOCK_FILE), encoding='utf-8') as f:
        info = json.load(f)
      return (f"process {info['pid']} on {info['host']} (started "
              f"{info['started']})")
    except (OSError, ValueError, KeyError):
      return 'another process'

  def _acquire(self) -> bool:
    """Takes the lock (False when someone else holds it)."""
    path = self.join(LOCK_FILE)
    with writing(path):
      # 'a': never truncate what the current holder wrote before we hold it.
      lock_file = open(path, 'a+', encoding='utf-8')  # pylint: disable=consider-using-with
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      lock_file.close()
      return False
    with writing(path):
      lock_file.seek(0)
      lock_file.truncate()
      json.dump({'pid': os.getpid(), 'host': socket.gethostname(),
                 'started': datetime.datetime.now().isoformat(
                     timespec='seconds')}, lock_file)
      lock_file.flush()
    self._lock_file = lock_file
    return True

  def _release(self):
    self._lock_depth -= 1
    if self._lock_depth == 0 and self._lock_file is not None:
      # The file stays: removing it would let a third process lock a new
      # file while a second one still waits on the old one.
      fcntl.flock(self._lock_file, fcntl.LOCK_UN)
      self._lock_file.close()
      self._lock_file = None

  @contextlib.contextmanager
  def owned(self):
    """Holds the folder's lock (re-entrant); refuses when another has it."""
    if not self.is_chief:
      yield
      return
    if self._lock_depth == 0 and not self._acquire():
      raise RunDirBusy(
          f'{self.path} is in use by {self.holder()}: one run writes to a '
          'folder at a time; wait for it to end, stop it, or pass another '
          '--model_dir')
    self._lock_depth += 1
    try:
      yield
    except BaseException:
      if self._lock_depth == 1:
        self._clean_up_after_failure()
      raise
    finally:
      self._release()

  def _clean_up_after_failure(self):
    """Removes what a failed write left: after a full disk, a checkpoint's
    half-written ckpt-N_temp/ (as large as the checkpoint) would otherwise
    keep the disk full until the next run."""
    try:
      removed = self.remove_leftovers()
    except RunDirError:  # Must not replace the error that stopped the run.
      return
    if removed:
      print('removed what the failed write left: ' + ', '.join(removed),
            flush=True)

  @contextlib.contextmanager
  def owned_if_free(self):
    """Yields True holding the lock, or False when another process has it."""
    if self._lock_depth or not self.is_chief or not os.path.isdir(self.path):
      yield self._lock_depth > 0
      return
    if not self._acquire():
      yield False
      return
    self._lock_depth = 1
    try:
      yield True
    finally:
      self._release()

  # -- config ------------------------------------------------------------------
  def saved_config(self) -> Optional[dict]:
    path = self.join(CONFIG_FILE)
    return hparams.load_yaml(path) if os.path.exists(path) else None

  def check_saved_config(self, config: hparams.Config,
                         allowed: Sequence[str] = (),
                         missing_ok: bool = False) -> List[str]:
    """Refuses to continue a run that used another config.

    Returns the differences found among the `allowed` keys (those a
    --resume_from may change); any other difference is an error. So is a
    folder with checkpoints but no config.yaml, unless `missing_ok` (reading
    it only): nothing would stop another batch size or rate from going on
    from those checkpoints.
    """
    if not self.latest_checkpoint():
      return []
    saved = self.saved_config()
    if saved is None:
      if missing_ok:
        return []
      raise RunDirError(
          f'{self.path} holds checkpoints but no {CONFIG_FILE}, so this '
          'command cannot be checked against the run that wrote them; put '
          f'that run\'s {CONFIG_FILE} back, or pass another --model_dir')
    differences = config_differences(saved, config.as_dict())
    refused = [k for k in differences if k not in allowed]
    if refused:
      path = self.join(CONFIG_FILE)
      hint = ''
      if not allowed and set(refused) <= set(divergence.RESUMABLE_CHANGES):
        name = os.path.basename(self.latest_checkpoint())
        hint = (f'; to go on from a checkpoint with only these changed, add '
                f'--resume_from=<checkpoint>, e.g. --resume_from={name}')
      raise RunDirError(
          f'{self.path} holds a run with another config (differs in '
          f'{", ".join(refused[:8])}); use the flags of that run (its '
          f'config is {path}) or a new --model_dir{hint}')
    return differences

  def save_config(self, config: hparams.Config):
    if not self.is_chief:
      return
    path = self.join(CONFIG_FILE)
    with writing(path):
      config.save_to_yaml(path + '.tmp')
      os.replace(path + '.tmp', path)

  # -- metrics -----------------------------------------------------------------
  def append_metrics(self, metrics: dict, config: hparams.Config):
    """Adds one evaluation to metrics.json (rewritten whole, atomically)."""
    if not self.is_chief:
      return
    record = read_metrics(self.path)
    record.setdefault('evals', []).append(metrics)
    record['final'] = metrics
    record['model_name'] = config.model.model_name
    record['dataset'] = config.data.ds_name
    record['ablation'] = config.train.ablation
    write_json_atomically(self.join(METRICS_FILE), record)

  def summary_writer(self, name: str):
    if not self.is_chief:
      return tf.summary.create_noop_writer()
    with writing(self.join(name)):
      return tf.summary.create_file_writer(self.join(name))

  def export_path(self, name: str = 'ema.weights.h5') -> str:
    with writing(self.join(EXPORT_DIR)):
      os.makedirs(self.join(EXPORT_DIR), exist_ok=True)
    return self.join(EXPORT_DIR, name)

  def archive_if_best(self, metrics: dict, latest: Optional[str]) -> bool:
    """Copies checkpoint `latest` to archive/ when its top-1 is the best."""
    if not self.is_chief or not latest:
      return False
    objective = metrics['eval/acc_top1']
    best_path = self.join(BEST_OBJECTIVE_FILE)
    if os.path.exists(best_path):
      with open(best_path, encoding='utf-8') as f:
        if float(f.read()) > objective:
          return False
    archive = self.join(ARCHIVE_DIR)
    staging = archive + '.tmp'
    with writing(archive):
      shutil.rmtree(staging, ignore_errors=True)
      os.makedirs(staging)
      for name in tf.io.gfile.glob(latest + '.*'):
        shutil.copy(name, staging)
      with open(os.path.join(staging, 'best_eval.json'), 'w',
                encoding='utf-8') as f:
        json.dump(metrics, f, indent=2)
      shutil.rmtree(archive, ignore_errors=True)
      os.replace(staging, archive)
      with open(best_path, 'w', encoding='utf-8') as f:
        f.write(f'{objective:f}')
    return True

  # -- checkpoints -------------------------------------------------------------
  def checkpoints(self) -> List[str]:
    """Checkpoint prefixes, oldest first, as the checkpoint state lists them
    (by number when the state file is missing or unreadable)."""
    try:
      state = tf.train.get_checkpoint_state(self.path)
    except (tf.errors.OpError, ValueError):  # A damaged state file.
      state = None
    if state and state.all_model_checkpoint_paths:
      paths = list(state.all_model_checkpoint_paths)
      if state.model_checkpoint_path not in paths:
        paths.append(state.model_checkpoint_path)
      # Names in this folder, however the state spelled them (a folder
      # that was moved still finds its checkpoints).
      return [self.join(os.path.basename(p)) for p in paths]
    numbers = sorted({int(m.group(1)) for m in map(
        _CHECKPOINT_NAME.match, _listdir(self.path)) if m})
    return [self.join(f'ckpt-{n}') for n in numbers]

  def latest_checkpoint(self) -> Optional[str]:
    found = self.checkpoints()
    return found[-1] if found else None

  def remove_leftovers(self) -> List[str]:
    """Deletes what an interrupted save or a full disk left behind.

    That is: `ckpt-N_temp/` folders, temporary files of atomic writes, and
    files of a checkpoint newer than the newest one the state lists (a save
    that never finished). Older unlisted checkpoints are kept: the
    checkpoint manager keeps one every few hours without listing it.
    """
    if not self.is_chief or not os.path.isdir(self.path):
      return []
    listed = self.checkpoints()
    newest = checkpoint_number(listed[-1]) if listed else -1
    removed = []
    for name in _listdir(self.path):
      path = self.join(name)
      match = _CHECKPOINT_NAME.match(name)
      if _TEMP_CHECKPOINT_DIR.match(name) or name == ARCHIVE_DIR + '.tmp':
        with writing(path):
          shutil.rmtree(path)
      elif (_TEMP_FILES.match(name) or (match and int(match.group(1)) > newest)
            ) and os.path.isfile(path):
        with writing(path):
          os.remove(path)
      else:
        continue
      removed.append(name)
    return removed

  def loadable_checkpoint(self, candidates: Optional[Iterable[str]] = None
                          ) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """(the newest checkpoint whose files read back whole or None,
    [(skipped path, why), ...]). Every tensor is read, so a truncated file or
    a bad checksum is caught here rather than half-way through a restore."""
    skipped = []
    for path in reversed(list(candidates or self.checkpoints())):
      problem = checkpoint_problem(path)
      if problem is None:
        return path, skipped
      skipped.append((path, problem))
    return None, skipped

  def set_aside(self, paths: Iterable[str], folder: str):
    """Moves checkpoints into a subfolder and drops them from the state."""
    paths = list(paths)
    if not paths or not self.is_chief:
      return
    target = self.join(folder)
    with writing(target):
      os.makedirs(target, exist_ok=True)
      for path in paths:
        for name in tf.io.gfile.glob(path + '.*'):
          os.replace(name, os.path.join(target, os.path.basename(name)))
      _drop_from_checkpoint_state(self.path, paths)


def _drop_from_checkpoint_state(directory: str, paths: List[str]):
  """Rewrites the checkpoint state without `paths`, timestamps kept (the
  checkpoint manager decides from them which checkpoints it may delete)."""
  try:
    state = tf.train.get_checkpoint_state(directory)
  except (tf.errors.OpError, ValueError):
    state = None
  if state is None:
    return
  dropped = {os.path.basename(p) for p in paths}
  timestamps = list(state.all_model_checkpoint_timestamps)
  kept = [(os.path.basename(p), timestamps[i] if i < len(timestamps) else None)
          for i, p in enumerate(state.all_model_checkpoint_paths)
          if os.path.basename(p) not in dropped]
  if not kept:
    os.remove(os.path.join(directory, 'checkpoint'))
    return
  # The v1 call is the public writer of the state file that the checkpoint
  # manager and tf.train.latest_checkpoint read; relative names keep the
  # folder movable, as the manager's own writes do.
  tf.compat.v1.train.update_checkpoint_state(
      directory, kept[-1][0],
      all_model_checkpoint_paths=[name for name, _ in kept],
      all_model_checkpoint_timestamps=(
          [t for _, t in kept] if all(t is not None for _, t in kept)
          else None),
      last_preserved_timestamp=state.last_preserved_timestamp)


def checkpoint_problem(path: str) -> Optional[str]:
  """Why checkpoint `path` cannot be read, or None when it reads whole."""
  if not os.path.exists(path + '.index'):
    return f'{os.path.basename(path)}.index is missing'
  try:
    reader = tf.train.load_checkpoint(path)
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)
  # The reader reports a short data file as IndexError, others as OpError.
  except (tf.errors.OpError, ValueError, IndexError, RuntimeError) as e:
    message = getattr(e, 'message', str(e)).strip().splitlines()[0]
    return message[:300]
  return None


def _listdir(path: str) -> List[str]:
  try:
    return sorted(os.listdir(path))
  except (FileNotFoundError, NotADirectoryError):
    return []
