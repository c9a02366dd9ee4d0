"""Shared test setup: quiet TensorFlow, two logical CPUs, seeded randomness."""
import os
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


@pytest.fixture(autouse=True)
def _seeded():
  import keras
  keras.utils.set_random_seed(1234)
  yield


@pytest.fixture(scope='session')
def fashion_mnist_tfds_dir(tmp_path_factory):
  """tfds' fashion_mnist prepared once from the Debian files, offline."""
  from automl_effnetv2 import local_data
  folder = local_data.default_fashion_mnist_dir()
  assert folder, ('the real Fashion-MNIST files are required: '
                  'apt-get install -y dataset-fashion-mnist')
  tfds_dir = str(tmp_path_factory.mktemp('tfds'))
  local_data.prepare_fashion_mnist(folder, tfds_dir)
  return tfds_dir
