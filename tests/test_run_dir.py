"""The run folder: one writer, readable checkpoints, clear write errors."""
import errno
import os
import shutil
import signal
import subprocess
import time

import pytest
import tensorflow as tf

from conftest import (SHARED_RUN_HPARAMS, cli_env, copy_of_shared_run,
                      main_command, one_device)
from automl_effnetv2 import local_data
from automl_effnetv2 import main
from automl_effnetv2 import run_dir
from automl_effnetv2 import train_errors
from automl_effnetv2 import train_lib


def _tiny(tiny_config):
  """The config of conftest's shared run."""
  return tiny_config(SHARED_RUN_HPARAMS)


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


# -- inputs and the folder are checked before anything is written --------------
def test_failed_data_check_writes_nothing(tiny_config, tmp_path):
  model_dir = tmp_path / 'run'
  # The prepared copy exists, yet the missing source folder is an error.
  with pytest.raises(local_data.DataFilesError, match='does not exist'):
    main.run('train', _tiny(tiny_config), str(model_dir),
             str(tmp_path / 'no_such_folder'), strategy=one_device())
  assert not model_dir.exists()


@pytest.mark.parametrize('mode', ['train', 'eval'])
def test_model_dir_that_is_a_file_is_refused(tiny_config, tmp_path, mode):
  path = tmp_path / 'a_file'
  path.write_text('not a folder')
  with pytest.raises(run_dir.RunDirError, match='is a file, not a folder'):
    main.run(mode, _tiny(tiny_config), str(path), strategy=one_device())
  assert path.read_text() == 'not a folder'


def test_simulated_read_only_folder_is_one_error(tiny_config, tmp_path,
                                                 monkeypatch):
  # Root may write anywhere, so the read-only file system is simulated at
  # the folder's creation (test_real_read_only_... mounts a real one).
  real_makedirs = os.makedirs
  model_dir = str(tmp_path / 'run')

  def read_only(path, *args, **kwargs):
    if str(path).startswith(model_dir):
      raise OSError(errno.EROFS, 'Read-only file system', path)
    return real_makedirs(path, *args, **kwargs)

  monkeypatch.setattr(os, 'makedirs', read_only)
  with pytest.raises(run_dir.RunDirError,
                     match='Read-only file system; pass a --model_dir in a '
                     'writable place'):
    main.run('train', _tiny(tiny_config), model_dir, strategy=one_device())


def test_simulated_full_disk_at_a_checkpoint_is_one_error(
    tiny_config, tmp_path, monkeypatch):
  def disk_full(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, 'ckpt-5_temp/part-00000; No space left on device')

  monkeypatch.setattr(tf.train.CheckpointManager, 'save', disk_full)
  with pytest.raises(run_dir.RunDirError,
                     match='No space left on device; free some space, then '
                     'rerun the same command'):
    main.run('train', _tiny(tiny_config), str(tmp_path / 'run'),
             strategy=one_device())


def test_failed_save_leaves_no_temp_folder(tiny_config, tmp_path,
                                           monkeypatch):
  # The shards are written into ckpt-5_temp/ for real; the merge into the
  # final files then finds the disk full.
  from tensorflow.python.checkpoint import functional_saver  # pylint: disable=g-import-not-at-top

  def disk_full(*args, **kwargs):
    raise tf.errors.ResourceExhaustedError(
        None, None, 'ckpt-5.data-00000-of-00001; No space left on device')

  monkeypatch.setattr(functional_saver.gen_io_ops, 'merge_v2_checkpoints',
                      disk_full)
  model_dir = tmp_path / 'run'
  with pytest.raises(run_dir.RunDirError, match='No space left on device'):
    main.run('train', _tiny(tiny_config), str(model_dir),
             strategy=one_device())
  assert not [p for p in model_dir.iterdir() if p.name.endswith('_temp')]
  assert not list(model_dir.glob('ckpt-*'))


# -- checkpoints --------------------------------------------------------------
def test_damaged_newest_checkpoint_is_skipped_and_leftovers_removed(
    shared_tiny_run, tiny_config, tmp_path, capsys):
  model_dir = copy_of_shared_run(shared_tiny_run, tmp_path)
  _truncate(os.path.join(model_dir, 'ckpt-15.data-00000-of-00001'))
  # What a kill during a save and a full disk leave behind...
  os.makedirs(os.path.join(model_dir, 'ckpt-20_temp'))
  with open(os.path.join(model_dir, 'ckpt-20_temp', 'part-00000'), 'w') as f:
    f.write('partial')
  with open(os.path.join(model_dir, 'ckpt-20.index'), 'w') as f:
    f.write('partial')
  with open(os.path.join(model_dir, 'metrics.json.tmp'), 'w') as f:
    f.write('{"par')
  # ... and an older checkpoint the manager keeps without listing it.
  for name in ('index', 'data-00000-of-00001'):
    shutil.copy(os.path.join(model_dir, f'ckpt-5.{name}'),
                os.path.join(model_dir, f'ckpt-1.{name}'))

  trainer = train_lib.Trainer(_tiny(tiny_config), model_dir,
                              strategy=one_device())
  result = trainer.train()
  out = capsys.readouterr().out
  assert 'skipped checkpoint ckpt-15: it cannot be read' in out
  assert 'resuming from ckpt-10' in out
  assert 'steps 10->15' in out  # Trained again from the good one.
  assert result['global_step'] == 15
  left = sorted(os.listdir(model_dir))
  assert 'ckpt-20_temp' not in left and 'ckpt-20.index' not in left
  assert 'metrics.json.tmp' not in left
  assert 'ckpt-1.index' in left
  assert sorted(os.listdir(os.path.join(model_dir, 'damaged'))) == [
      'ckpt-15.data-00000-of-00001', 'ckpt-15.index']
  assert run_dir.checkpoint_problem(os.path.join(model_dir, 'ckpt-15')) is None


def test_no_readable_checkpoint_is_one_error_naming_them(
    shared_tiny_run, tiny_config, tmp_path):
  model_dir = copy_of_shared_run(shared_tiny_run, tmp_path)
  for step in (5, 10, 15):
    _truncate(os.path.join(model_dir, f'ckpt-{step}.index'))
  with pytest.raises(train_errors.TrainingError,
                     match=r'can be read \(ckpt-15, ckpt-10, ckpt-5 damaged\)'
                     '; copy a good one back'):
    main.run('eval', _tiny(tiny_config), model_dir, strategy=one_device())


def test_eval_of_another_model_in_a_folder_without_config(
    shared_tiny_run, tiny_config, tmp_path):
  model_dir = copy_of_shared_run(shared_tiny_run, tmp_path)
  os.remove(os.path.join(model_dir, 'config.yaml'))
  other = tiny_config(SHARED_RUN_HPARAMS + ',model.width_coefficient=0.5')
  with pytest.raises(train_errors.TrainingError,
                     match='does not fit this model .*another --model_name'):
    main.run('eval', other, model_dir, strategy=one_device())
  assert not os.path.exists(os.path.join(model_dir, 'config.yaml'))


def test_evaluation_stopped_by_sigterm_is_redone_on_resume(
    tiny_config, tmp_path, monkeypatch):
  model_dir = str(tmp_path / 'run')
  evaluate = train_lib.Trainer.evaluate

  def sigterm_during_the_first(trainer, *args, **kwargs):
    monkeypatch.setattr(train_lib.Trainer, 'evaluate', evaluate)
    os.kill(os.getpid(), signal.SIGTERM)  # The trainer's handler stops it.
    return evaluate(trainer, *args, **kwargs)

  monkeypatch.setattr(train_lib.Trainer, 'evaluate', sigterm_during_the_first)
  with pytest.raises(train_errors.TrainingInterrupted):
    main.run('traineval', tiny_config(), model_dir, strategy=one_device())
  assert run_dir.read_metrics(model_dir) == {}  # Stopped in stage 1's.
  main.run('traineval', tiny_config(), model_dir, strategy=one_device())
  evals = run_dir.read_metrics(model_dir)['evals']
  assert [e['stage'] for e in evals] == [1, 2]
  assert evals[0]['global_step'] < evals[1]['global_step'] == 15


def _listing(folder):
  return {name: (os.path.getsize(os.path.join(folder, name)),
                 os.path.getmtime(os.path.join(folder, name)))
          for name in os.listdir(folder)}


def test_training_on_in_a_folder_without_config_is_refused(
    shared_tiny_run, tiny_config, tmp_path):
  model_dir = copy_of_shared_run(shared_tiny_run, tmp_path)
  os.remove(os.path.join(model_dir, 'config.yaml'))
  before = _listing(model_dir)
  other_batch = tiny_config(SHARED_RUN_HPARAMS + ',train.batch_size=8')
  with pytest.raises(run_dir.RunDirError,
                     match='holds checkpoints but no config.yaml') as error:
    main.run('train', other_batch, model_dir, strategy=one_device())
  assert str(error.value).endswith('or pass another --model_dir')
  after = _listing(model_dir)
  # Only the lock changed hands; no config.yaml, checkpoint or metric.
  assert {k: v for k, v in after.items() if k != run_dir.LOCK_FILE} == {
      k: v for k, v in before.items() if k != run_dir.LOCK_FILE}


# -- two real processes ---------------------------------------------------------
def _lock_holder_pid(model_dir):
  try:
    with open(os.path.join(model_dir, run_dir.LOCK_FILE)) as f:
      return int(f.read().split('"pid": ')[1].split(',')[0])
  except (OSError, IndexError, ValueError):
    return None


@pytest.mark.multiprocess
def test_one_writer_per_folder_and_eval_beside_it(fashion_mnist_tfds_dir,
                                                  tmp_path):
  model_dir = str(tmp_path / 'run')
  # Long enough (3750 steps) to still run while the others start.
  log = open(tmp_path / 'trainer.log', 'w')  # pylint: disable=consider-using-with
  trainer = subprocess.Popen(
      main_command(fashion_mnist_tfds_dir, '--mode=train',
                   f'--model_dir={model_dir}', extra=',train.epochs=1'),
      env=cli_env(), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 240
    while not tf.train.latest_checkpoint(model_dir):
      assert trainer.poll() is None and time.time() < deadline
      time.sleep(0.1)
    assert _lock_holder_pid(model_dir) == trainer.pid
    second = subprocess.Popen(
        main_command(fashion_mnist_tfds_dir, '--mode=train',
                     f'--model_dir={model_dir}', extra=',data.ram=7'),
        env=cli_env(), cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    evaluation = subprocess.run(
        main_command(fashion_mnist_tfds_dir, '--mode=eval',
                     f'--model_dir={model_dir}', extra=',train.epochs=1'),
        env=cli_env(), cwd=tmp_path, capture_output=True, text=True,
        check=False, timeout=300)
    second_out, second_err = second.communicate(timeout=300)
    assert trainer.poll() is None, 'the first run ended too early'
  finally:
    trainer.send_signal(signal.SIGKILL)  # Leaves its lock file behind.
    trainer.wait()
    log.close()
  # The second writer stopped at once, naming the first; nothing of its own
  # config reached the folder.
  assert second.returncode == 1, second_out + second_err
  assert 'Traceback' not in second_err
  lines = [line for line in second_err.splitlines()
           if line.startswith('error:')]
  assert len(lines) == 1, second_err[-3000:]
  assert lines[0].startswith(f'error: {model_dir} is in use by process '
                             f'{trainer.pid} on {os.uname().nodename} (started')
  assert lines[0].endswith('or pass another --model_dir')
  assert 'ram: 7' not in open(os.path.join(model_dir, 'config.yaml')).read()
  # Evaluation beside the trainer printed its result and wrote nothing.
  assert evaluation.returncode == 0, evaluation.stderr[-2000:]
  assert 'eval at step' in evaluation.stdout
  assert 'is printed only' in evaluation.stdout
  assert not os.path.exists(os.path.join(model_dir, 'metrics.json'))
  assert not os.path.exists(os.path.join(model_dir, 'eval'))
  # The killed trainer's lock is stale: the next run takes the folder over.
  evaluation = subprocess.run(
      main_command(fashion_mnist_tfds_dir, '--mode=eval',
                   f'--model_dir={model_dir}', extra=',train.epochs=1'),
      env=cli_env(), cwd=tmp_path, capture_output=True, text=True,
      check=True, timeout=300)
  assert 'is printed only' not in evaluation.stdout
  assert len(run_dir.read_metrics(model_dir)['evals']) == 1


# -- real read-only and full file systems ------------------------------------------
def _private_mounts_work():
  probe = subprocess.run(
      ['unshare', '-m', 'sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'],
      capture_output=True, check=False)
  return probe.returncode == 0


@pytest.mark.skipif(not shutil.which('unshare') or not _private_mounts_work(),
                    reason='no private mounts here; the simulated tests '
                    'above cover the same errors')
def test_real_read_only_and_full_disk_mounts(fashion_mnist_tfds_dir,
                                             tmp_path):
  # A tmpfs in a private mount namespace: read-only for the first command,
  # then 512 KiB (room for config.yaml, not for a 1.3 MB checkpoint), then
  # enlarged so that the same command resumes and cleans up.
  mount_point = tmp_path / 'mnt'
  mount_point.mkdir()
  model_dir = f'{mount_point}/run'
  command = ' '.join(f"'{a}'" for a in main_command(
      fashion_mnist_tfds_dir, '--mode=train', f'--model_dir={model_dir}'))
  script = f'''
mount -t tmpfs -o ro,size=1m tmpfs {mount_point}
{command}; echo "read-only exit $?"
umount {mount_point}; mount -t tmpfs -o size=512k tmpfs {mount_point}
{command}; echo "full exit $?"; ls {model_dir}
mount -o remount,size=64m {mount_point}
{command} > /dev/null; echo "again exit $?"; ls {model_dir}
'''
  result = subprocess.run(['unshare', '-m', 'sh', '-c', script],
                          env=cli_env(), cwd=tmp_path, capture_output=True,
                          text=True, check=False, timeout=600)
  out, err = result.stdout, result.stderr
  assert 'Traceback' not in err, err[-3000:]
  errors = [line for line in err.splitlines() if line.startswith('error:')]
  assert errors[0] == (f'error: cannot write {model_dir}: Read-only file '
                       'system; pass a --model_dir in a writable place')
  assert 'read-only exit 1' in out
  assert 'No space left on device; free some space, then rerun the same ' \
         'command' in errors[1]
  assert len(errors) == 2, err[-3000:]
  assert 'full exit 1' in out and 'again exit 0' in out
  listing = out.split('again exit 0')[1].split()
  assert 'ckpt-15.index' in listing
  assert not [name for name in listing if name.endswith(('_temp', '.tmp'))]
