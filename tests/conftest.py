"""Shared test setup: quiet TensorFlow, two logical CPUs, seeded randomness."""
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices so MirroredStrategy tests have two replicas. This
# must happen before TensorFlow initializes its devices.
_cpus = tf.config.list_physical_devices('CPU')
try:
  tf.config.set_logical_device_configuration(
      _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # Devices already initialized by another import.
  pass


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'multiprocess: runs several training processes at once '
      '(deselect with -m "not multiprocess" on a busy machine)')


@pytest.fixture(autouse=True)
def _seeded():
  import keras
  keras.utils.set_random_seed(1234)
  yield


@contextlib.contextmanager
def _shared_by_workers(tmp_path_factory, name):
  """Yields the path <the test run's temp folder>/<name> while holding a lock
  that every pytest-xdist worker takes, so that the first to come makes
  what lies there and the others, waiting, then find it made."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # The run's folder, above each worker's own.
  with open(root / f'{name}.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield root / name


@pytest.fixture(scope='session')
def fashion_mnist_tfds_dir(tmp_path_factory):
  """tfds' fashion_mnist prepared once from the Debian files, offline.

  Under pytest-xdist the workers share one copy: the first prepares it
  while the others wait on a lock, then they check and reuse it.
  """
  from automl_effnetv2 import local_data
  folder = local_data.default_fashion_mnist_dir()
  assert folder, ('the real Fashion-MNIST files are required: '
                  'apt-get install -y dataset-fashion-mnist')
  with _shared_by_workers(tmp_path_factory, 'fashion_mnist_tfds') as tfds_dir:
    local_data.prepare_fashion_mnist(folder, str(tfds_dir))
  return str(tfds_dir)


# Evaluations read the first 1,000 of the 10,000 test images.
TINY_EVAL_IMAGES = 1000
TINY_HPARAMS = ','.join([
    'model.width_coefficient=0.25', 'model.depth_coefficient=0.25',
    'model.feature_size=64', 'train.batch_size=16', 'train.epochs=0.004',
    'train.min_steps=0', 'train.lr_warmup_epoch=0', 'train.lr_base=0.05',
    'train.stages=2', 'train.sched=true', 'train.isize=32', 'eval.isize=32',
    'data.ibase=24', 'eval.batch_size=1000', 'runtime.log_step_count_steps=5',
    'runtime.save_checkpoints_steps=5', 'runtime.deterministic=true',
    'data.augname=ft_randaug', 'data.ram=10', 'data.mixup_alpha=0.2',
    'data.cutmix_alpha=0.2',
    # 1K examples instead of upstream's 16K: filling the shuffle buffer
    # took seconds at the start of every training stage.
    'data.shuffle_size_k=1',
    f'data.splits.eval.num_images={TINY_EVAL_IMAGES}',
])


def build_tiny_config(fashion_dir, extra=''):
  """The tiny config (TINY_HPARAMS on FashionMNISTFt), then `extra`."""
  from automl_effnetv2 import main  # pylint: disable=g-import-not-at-top
  config = main.build_config(
      'efficientnetv2-b0', 'FashionMNISTFt',
      TINY_HPARAMS + f',data.tfds_data_dir={fashion_dir}')
  config.override(extra)
  return config


@pytest.fixture
def tiny_config(fashion_mnist_tfds_dir):
  """A fast Fashion-MNIST config: tiny B0, 32 px, two stages, 15 steps."""
  return lambda extra='': build_tiny_config(fashion_mnist_tfds_dir, extra)


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The shared run's config: TINY_HPARAMS in one stage, 15 steps, a checkpoint
# every 5 (ckpt-5, ckpt-10, ckpt-15).
SHARED_RUN_HPARAMS = 'train.stages=0'


# A run trained far enough to classify well (above 50 % top-1 on the test
# images after 0.03 epochs): plain inputs, a high momentum rate and a short
# EMA, one checkpoint at its end. Export and evaluation tests share it.
CONFIDENT_RUN_HPARAMS = (
    'train.epochs=0.03,train.stages=0,data.mixup_alpha=0,data.cutmix_alpha=0,'
    'data.augname=ft_plain,train.optimizer=momentum,train.lr_base=0.5,'
    'train.ema_decay=0.9,runtime.save_checkpoints_steps=1000')


def _train_shared(tmp_path_factory, fashion_dir, name, hparams):
  """Trains the tiny config plus `hparams` once per test session into
  <the run's temp folder>/<name> and returns that folder.

  Under pytest-xdist the first worker trains it while the others wait on a
  lock; it is trained into a scratch folder and renamed, so that nobody
  sees half a run.
  """
  from automl_effnetv2 import train_lib  # pylint: disable=g-import-not-at-top
  with _shared_by_workers(tmp_path_factory, name) as folder:
    if not folder.exists():
      scratch = folder.with_name(folder.name + '.partial')
      shutil.rmtree(scratch, ignore_errors=True)
      config = build_tiny_config(fashion_dir, hparams)
      train_lib.Trainer(config, str(scratch), strategy=one_device()).train()
      os.rename(scratch, folder)
  return str(folder)


@pytest.fixture(scope='session')
def shared_tiny_run(fashion_mnist_tfds_dir, tmp_path_factory):
  """A finished tiny run (SHARED_RUN_HPARAMS), trained once per test
  session, never written to: tests that need a trained folder copy it
  (`copy_of_shared_run`) rather than train their own."""
  return _train_shared(tmp_path_factory, fashion_mnist_tfds_dir,
                       'shared_tiny_run', SHARED_RUN_HPARAMS)


@pytest.fixture(scope='session')
def confident_tiny_run(fashion_mnist_tfds_dir, tmp_path_factory):
  """A finished run of CONFIDENT_RUN_HPARAMS, shared as shared_tiny_run is."""
  return _train_shared(tmp_path_factory, fashion_mnist_tfds_dir,
                       'confident_tiny_run', CONFIDENT_RUN_HPARAMS)


def copy_of_shared_run(shared_run: str, tmp_path) -> str:
  """A copy of the shared run that a test may change."""
  copy = str(tmp_path / 'run')
  shutil.copytree(shared_run, copy)
  return copy


def main_command(fashion_dir, *flags, extra=''):
  """`python -m automl_effnetv2.main` with the tiny config and `flags`."""
  hparams = TINY_HPARAMS + f',data.tfds_data_dir={fashion_dir}' + extra
  return [sys.executable, '-m', 'automl_effnetv2.main',
          '--dataset_cfg=FashionMNISTFt', f'--hparam_str={hparams}',
          '--strategy=one_device', *flags]


# What TensorFlow's C++ runtime prints on import, whatever the program does.
TF_NATIVE_LOG = re.compile(
    r'^([IWEF]\d{4} |WARNING: All log messages before)')


def one_device():
  """The one-CPU strategy of in-process training tests."""
  return tf.distribute.OneDeviceStrategy('/cpu:0')


def cli_env():
  """The environment of a command run from any folder."""
  return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')


def flags_over(defaults, flags, **names):
  """The argv of `defaults` ({flag: value}) with `flags` ([flag, value, ...])
  put over them; `{name}` in a value is filled from `names`."""
  argv = dict(defaults)
  for flag, value in zip(flags[::2], flags[1::2]):
    argv[flag] = value.format(**names)
  return [item for pair in argv.items() for item in pair]


def bench_refusal(script, argv):
  """The one line a bench script prints when it refuses `argv` (exit 2)."""
  proc = subprocess.run([sys.executable, script, *argv], capture_output=True,
                        text=True, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr[-2000:]
  return lines[0]


def write_upstream_state(trainer, prefix):
  """The trainer's state as upstream's main.py names it: the model's
  variables under their upstream names, RMSProp's mean square and momentum
  as /RMSProp and /RMSProp_1, and the global step."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from automl_effnetv2 import pretrained  # pylint: disable=g-import-not-at-top
  names = pretrained.upstream_variable_names(trainer.model)
  tensors = {names[v.path]: v.numpy() for v in trainer.model.weights
             if v.path in names}
  optimizer = trainer.optimizer
  for i, variable in enumerate(trainer.steps.train_variables):
    if variable.path not in names:
      continue
    tensors[names[variable.path] + '/RMSProp'] = (
        optimizer._velocities[i].numpy())  # pylint: disable=protected-access
    tensors[names[variable.path] + '/RMSProp_1'] = (
        optimizer._momentums[i].numpy())  # pylint: disable=protected-access
  tensors['global_step'] = np.array(trainer.global_step.numpy(), np.int64)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors),
                    shape_and_slices=[''] * len(tensors),
                    tensors=[tf.constant(v) for v in tensors.values()])
