"""Imports TensorFlow so that TF_CPP_MIN_LOG_LEVEL holds while it loads.

On CPUs where TensorFlow turns its oneDNN operations on (those with AVX-512,
for one), TensorFlow 2.21 logs a notice through absl while it loads, before
it reads its log level, so TF_CPP_MIN_LOG_LEVEL=2 or 3 does not hide it and a
one-line refusal would come under four lines of notices. Standard library
only: the bench scripts also run it under upstream's TensorFlow 2.15.
"""
import importlib
import os
import sys


def quietly():
  """Imports TensorFlow; when TF_CPP_MIN_LOG_LEVEL hides anything, what its
  C++ side writes to stderr during the import stays off it. Python errors of
  the import still show: stderr is back before they propagate."""
  if 'tensorflow' in sys.modules or os.environ.get(
      'TF_CPP_MIN_LOG_LEVEL', '') in ('', '0'):
    importlib.import_module('tensorflow')
    return
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    importlib.import_module('tensorflow')
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
