r"""Maintains the reproducibility patch series in this folder.

The series (series.txt, applied in order) turns the project's
upstream-faithful baseline into the current tree. The baseline itself is
never stored: it is what reverse-applying the series to the tree gives.

  python patches/patchset.py check            # series reverse-applies cleanly
  python patches/patchset.py baseline DIR     # write the baseline tree to DIR
  python patches/patchset.py side-by-side automl_effnetv2/datasets.py
  python patches/patchset.py unpack WORK      # WORK/0 baseline ... WORK/N tree
  python patches/patchset.py pack WORK        # regenerate patches from WORK
  python patches/patchset.py upstream PATH    # the study's change, as commits
                                              # in a google/automl checkout

To change code that a patch touches: `unpack`, edit the same change into
every tree from the step it belongs to (WORK/k, ..., WORK/N), `pack`, then
copy WORK/N's files into the repository (pack checks they agree).
"""
import argparse
import difflib
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def series() -> List[str]:
  with open(os.path.join(HERE, 'series.txt'), encoding='utf-8') as f:
    return [line.strip() for line in f
            if line.strip() and not line.startswith('#')]


def patched_files(patch_path: str) -> List[str]:
  """Repository paths a patch touches (from its 'diff --git' lines)."""
  files = []
  with open(patch_path, encoding='utf-8') as f:
    for line in f:
      if line.startswith('diff --git a/'):
        files.append(line.split()[2][len('a/'):])
  return files


def all_patched_files() -> List[str]:
  files = []
  for name in series():
    for path in patched_files(os.path.join(HERE, name)):
      if path not in files:
        files.append(path)
  return files


def _copy_tree(dest: str):
  """Copies the package and every patched file into dest."""
  shutil.copytree(os.path.join(REPO, 'automl_effnetv2'),
                  os.path.join(dest, 'automl_effnetv2'),
                  ignore=shutil.ignore_patterns('__pycache__'))
  for path in all_patched_files():
    source = os.path.join(REPO, path)
    if os.path.exists(source) and not os.path.exists(os.path.join(dest, path)):
      os.makedirs(os.path.dirname(os.path.join(dest, path)), exist_ok=True)
      shutil.copy(source, os.path.join(dest, path))


def git_apply(directory: str, patch: str, reverse: bool = False):
  command = ['git', 'apply', '--whitespace=nowarn']
  if reverse:
    command.append('-R')
  command.append(os.path.join(HERE, patch))
  result = subprocess.run(command, cwd=directory, capture_output=True,
                          text=True, check=False)
  if result.returncode:
    raise RuntimeError(f'git apply {"-R " if reverse else ""}{patch} failed '
                       f'in {directory}:\n{result.stderr}')


def make_baseline(dest: str) -> str:
  """Writes the current tree and reverse-applies the series in dest."""
  os.makedirs(dest, exist_ok=True)
  _copy_tree(dest)
  for name in reversed(series()):
    git_apply(dest, name, reverse=True)
  return dest


def unpack(work: str):
  names = series()
  make_baseline(os.path.join(work, '0'))
  for index, name in enumerate(names, start=1):
    shutil.copytree(os.path.join(work, str(index - 1)),
                    os.path.join(work, str(index)))
    git_apply(os.path.join(work, str(index)), name)
  print(f'{work}/0 is the baseline, {work}/{len(names)} the current tree')


def file_diff(old_root: str, new_root: str, path: str) -> str:
  """A git-style unified diff of one file between two trees ('' if equal)."""
  old = os.path.join(old_root, path)
  new = os.path.join(new_root, path)
  old_lines = _read_lines(old)
  new_lines = _read_lines(new)
  if old_lines == new_lines:
    return ''
  header = [f'diff --git a/{path} b/{path}\n']
  if old_lines is None:
    header.append('new file mode 100644\n')
  elif new_lines is None:
    header.append('deleted file mode 100644\n')
  body = difflib.unified_diff(
      old_lines or [], new_lines or [],
      fromfile='/dev/null' if old_lines is None else f'a/{path}',
      tofile='/dev/null' if new_lines is None else f'b/{path}', n=3)
  return ''.join(header) + ''.join(body)


def _read_lines(path):
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    lines = f.readlines()
  if lines and not lines[-1].endswith('\n'):
    raise ValueError(f'{path} must end with a newline')
  return lines


def _tree_files(root: str) -> List[str]:
  out = []
  for directory, _, names in os.walk(root):
    if '__pycache__' in directory:
      continue
    for name in names:
      out.append(os.path.relpath(os.path.join(directory, name), root))
  return sorted(out)


def pack(work: str):
  names = series()
  for index, name in enumerate(names, start=1):
    old, new = os.path.join(work, str(index - 1)), os.path.join(work, str(index))
    paths = sorted(set(_tree_files(old)) | set(_tree_files(new)))
    text = ''.join(file_diff(old, new, p) for p in paths)
    with open(os.path.join(HERE, name), 'w', encoding='utf-8') as f:
      f.write(text)
    print(f'wrote {name}')
  final = os.path.join(work, str(len(names)))
  stale = [p for p in _tree_files(final)
           if not os.path.exists(os.path.join(REPO, p)) or
           not filecmp.cmp(os.path.join(final, p), os.path.join(REPO, p),
                           shallow=False)]
  if stale:
    print('copy these from the last tree into the repository: ' +
          ', '.join(stale))


def side_by_side(path: str, width: int):
  with tempfile.TemporaryDirectory() as tmp:
    make_baseline(tmp)
    baseline = os.path.join(tmp, path)
    if not os.path.exists(baseline):
      baseline = os.devnull
    subprocess.run(['diff', '--side-by-side', f'--width={width}',
                    '--left-column', baseline, os.path.join(REPO, path)],
                   check=False)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  sub = parser.add_subparsers(dest='command', required=True)
  sub.add_parser('check')
  sub.add_parser('baseline').add_argument('dest')
  sbs = sub.add_parser('side-by-side')
  sbs.add_argument('path')
  sbs.add_argument('--width', type=int, default=200)
  sub.add_parser('unpack').add_argument('work')
  sub.add_parser('pack').add_argument('work')
  sub.add_parser(
      'upstream', help='write the Fashion-MNIST study into a google/automl '
      'checkout (upstream_edits.py)').add_argument(
          'path', help='the checkout\'s root or its efficientnetv2/ folder')
  args = parser.parse_args()
  if args.command == 'check':
    with tempfile.TemporaryDirectory() as tmp:
      make_baseline(tmp)
    print(f'ok: {len(series())} patches reverse-apply cleanly')
  elif args.command == 'baseline':
    make_baseline(args.dest)
    print(f'baseline written to {args.dest}')
  elif args.command == 'side-by-side':
    side_by_side(args.path, args.width)
  elif args.command == 'unpack':
    unpack(args.work)
  elif args.command == 'pack':
    pack(args.work)
  elif args.command == 'upstream':
    sys.path.insert(0, HERE)
    import upstream_edits  # pylint: disable=g-import-not-at-top
    return upstream_edits.run(args.path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
