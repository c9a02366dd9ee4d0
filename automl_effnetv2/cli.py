"""How the command-line programs report a mistake in their arguments.

A wrong flag and a wrong config value are both usage errors: one line on
stderr that names the problem and points to --help, and exit status 2 (the
status of a usage error for shells and argparse), before anything is written.
"""
import sys

from absl import flags

USAGE_EXIT = 2


def usage_error(message: str):
  """One line and a pointer to --help; no page of flag help above it."""
  print(f'error: {message} (see --help)', file=sys.stderr)
  sys.exit(USAGE_EXIT)


def parse_flags(argv):
  """absl's flag parsing, with its errors reported as usage errors (absl's
  own parser prints two lines and exits 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    usage_error(' '.join(str(e).split()))
