"""Command-line errors of the bench scripts: one line that names the script
and the problem, exit status 2 (argparse's usage block left out)."""
import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quiet_tensorflow_import():
  """Imports TensorFlow with TF_CPP_MIN_LOG_LEVEL at 2 unless set, through
  the package's tf_import (which keeps its load-time notices off stderr)."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  from automl_effnetv2 import tf_import  # pylint: disable=import-outside-toplevel
  tf_import.quietly()


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
