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
