"""Command-line errors of the bench scripts: one line that names the script
and the problem, exit status 2 (argparse's usage block left out)."""
import argparse
import importlib
import os
import sys


def quiet_tensorflow_import():
  """Imports TensorFlow with TF_CPP_MIN_LOG_LEVEL at 2 unless set, and
  keeps what TensorFlow's C++ side prints while it loads off stderr when that
  level hides anything.

  On CPUs where TensorFlow turns its oneDNN operations on (those with
  AVX-512, for one), TensorFlow 2.21 logs a notice through absl while it
  loads, before it reads its log level, so the variable does not hide it and
  a one-line refusal would come under four lines of notices. Python errors
  of the import still show: stderr is back before they propagate.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if 'tensorflow' in sys.modules or os.environ['TF_CPP_MIN_LOG_LEVEL'] in (
      '', '0'):
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


def fail(script_file: str, message: str):
  print(f'{os.path.basename(script_file)}: error: {message}', file=sys.stderr)
  sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
  """An ArgumentParser whose errors go through `fail`; the first line of
  `doc` is its description, the rest its epilog as written."""

  def __init__(self, script_file: str, doc: str, **kwargs):
    super().__init__(description=doc.split('\n\n', 1)[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     **kwargs)
    self.script_file = script_file

  def error(self, message):
    fail(self.script_file, message)


def check_run_folder(script_file: str, folder):
  """Refuses `--config` unless it is a port run folder (one with the
  config.yaml the port writes when a run starts)."""
  if not folder or not os.path.isfile(os.path.join(folder, 'config.yaml')):
    fail(script_file, '--config must be a port run folder with a config.yaml')
