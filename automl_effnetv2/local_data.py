"""Prepares the tfds `fashion_mnist` dataset from a local folder, offline.

Users who are online get tfds' normal download. Machines without a network
can point `--data_dir` at a folder holding the four standard IDX files, e.g.
Debian's `dataset-fashion-mnist` package (/usr/share/datasets/fashion-mnist).

Debian recompressed the `.gz` files, so tfds' registered sha256 of the
archives does not match them; integrity is checked on the decompressed bytes
instead (md5, as published by the Fashion-MNIST authors), together with the
IDX headers. tfds writes the prepared dataset to an `incomplete.*` folder and
renames it only when complete, so an interrupted preparation leaves nothing
that a later run would read.

The prepared copy is tied to the files it came from: `prepared_from.json`
beside it holds their folder, sizes, modification times and md5s. Every run
compares the folder it is given with that record (a few `stat` calls); when
anything differs, the files are checked in full again, so a missing folder or
altered files are an error, never a silent run on the old copy.
"""
import contextlib
import gzip
import hashlib
import json
import os
import shutil
import struct
import tempfile
import zlib
from typing import Dict, Optional

from automl_effnetv2 import train_errors

SOURCE_RECORD = 'prepared_from.json'

DEBIAN_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
INSTALL_HINT = (
    "install the files with 'apt-get install -y dataset-fashion-mnist' "
    "(they land in /usr/share/datasets/fashion-mnist), or pass "
    "--data_dir=<folder with train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
    "t10k-labels-idx1-ubyte.gz>; with a network, --data_dir=tfds downloads "
    "them through tfds")

# name: (md5 of the decompressed file, IDX magic, number of items)
FASHION_MNIST_FILES: Dict[str, tuple] = {
    'train-images-idx3-ubyte.gz': ('f4a8712d7a061bf5bd6d2ca38dc4d50a', 2051,
                                   60000),
    'train-labels-idx1-ubyte.gz': ('9018921c3c673c538a1fc5bad174d6f9', 2049,
                                   60000),
    't10k-images-idx3-ubyte.gz': ('8181f5470baa50b63fa0f6fddb340f0a', 2051,
                                  10000),
    't10k-labels-idx1-ubyte.gz': ('15d484375f8d13e6eb1aabb0c3f46965', 2049,
                                  10000),
}


class DataFilesError(train_errors.DatasetError):
  """Local dataset files are missing or damaged; the message says the fix."""


def default_fashion_mnist_dir() -> Optional[str]:
  """Debian's folder when it holds the files, else None (tfds download)."""
  if all(os.path.isfile(os.path.join(DEBIAN_FASHION_MNIST_DIR, name))
         for name in FASHION_MNIST_FILES):
    return DEBIAN_FASHION_MNIST_DIR
  return None


def verify_fashion_mnist_dir(folder: str) -> Dict[str, str]:
  """Checks presence, gzip integrity, IDX headers, counts and md5 of each file.

  Returns:
    {file name: md5 of its decompressed bytes}.
  Raises:
    DataFilesError: naming every problem found and how to fix it.
  """
  if not os.path.isdir(folder):
    raise DataFilesError(
        f'Fashion-MNIST folder {folder!r} does not exist: {INSTALL_HINT}')
  problems = []
  checksums = {}
  for name, (md5, magic, count) in FASHION_MNIST_FILES.items():
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
      problems.append(f'{name} is missing')
      continue
    try:
      with gzip.open(path, 'rb') as f:
        data = f.read()
    except (OSError, EOFError, zlib.error) as e:
      problems.append(f'{name} is truncated or corrupt ({e})')
      continue
    if len(data) < 8:
      problems.append(f'{name} is too short to be an IDX file')
      continue
    found_magic, found_count = struct.unpack('>II', data[:8])
    if found_magic != magic:
      problems.append(f'{name} has IDX magic {found_magic}, expected {magic}')
    elif found_count != count:
      problems.append(f'{name} holds {found_count} items, expected {count}')
    elif hashlib.md5(data).hexdigest() != md5:
      problems.append(f'{name} has md5 {hashlib.md5(data).hexdigest()} '
                      f'(decompressed), expected {md5}')
    checksums[name] = hashlib.md5(data).hexdigest()
  if problems:
    raise DataFilesError(
        f'Fashion-MNIST files in {folder!r} are not usable: '
        f'{"; ".join(problems)}. Fix: {INSTALL_HINT}')
  return checksums


def _file_stats(folder: str) -> Optional[Dict[str, list]]:
  """{name: [size, mtime_ns]} of the four files; None if one is missing."""
  stats = {}
  for name in FASHION_MNIST_FILES:
    try:
      found = os.stat(os.path.join(folder, name))
    except OSError:
      return None
    stats[name] = [found.st_size, found.st_mtime_ns]
  return stats


def _read_source_record(prepared_dir: str) -> dict:
  try:
    with open(os.path.join(prepared_dir, SOURCE_RECORD), encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _write_source_record(prepared_dir: str, folder: str, stats, checksums):
  path = os.path.join(prepared_dir, SOURCE_RECORD)
  tmp = f'{path}.{os.getpid()}.tmp'  # Runs sharing the copy may race here.
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump({'folder': os.path.realpath(folder), 'files': stats,
               'md5': checksums}, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def check_source_of_prepared(prepared_dir: str, folder: str):
  """Refuses a prepared copy whose source folder is gone or has changed.

  Cheap when nothing changed (a stat per file); otherwise the files are
  checked in full and, when they hold the same data, the record is renewed.
  """
  record = _read_source_record(prepared_dir)
  stats = _file_stats(folder)
  if (stats is not None and record.get('folder') == os.path.realpath(folder)
      and record.get('files') == stats):
    return
  checksums = verify_fashion_mnist_dir(folder)
  if record.get('md5') not in (None, checksums):
    raise DataFilesError(
        f'the prepared Fashion-MNIST copy in {prepared_dir!r} was made from '
        f'other files than those in {folder!r}; delete {prepared_dir!r} to '
        'prepare it again from them')
  try:
    _write_source_record(prepared_dir, folder, stats, checksums)
  except OSError:  # A read-only shared copy: the full check runs each time.
    pass


@contextlib.contextmanager
def _builder_url(builder_cls, url: str):
  """Points a tfds MNIST-family builder at another base URL for a while.

  tfds joins `URL` with the file names and copies non-http URLs with its
  file downloader, so a folder path works as a URL.
  """
  original = builder_cls.URL
  builder_cls.URL = url
  try:
    yield
  finally:
    builder_cls.URL = original


def prepare_fashion_mnist(folder: str, tfds_data_dir: Optional[str] = None):
  """Verifies `folder` and prepares tfds' fashion_mnist from it if needed.

  Returns the tfds builder, ready for `as_dataset`.
  """
  import tensorflow_datasets as tfds  # Heavy import, only when needed.
  from tensorflow_datasets.image_classification import mnist

  builder = tfds.builder('fashion_mnist', data_dir=tfds_data_dir)
  if builder.is_prepared():
    check_source_of_prepared(builder.data_dir, folder)
    return builder
  checksums = verify_fashion_mnist_dir(folder)
  stats = _file_stats(folder)
  tfds.disable_progress_bar()
  download_dir = tempfile.mkdtemp(prefix='fashion_mnist_copy_')
  try:
    with _builder_url(mnist.FashionMNIST, os.path.abspath(folder) + '/'):
      builder.download_and_prepare(
          download_dir=download_dir,
          download_config=tfds.download.DownloadConfig(
              # Checked above on the decompressed bytes; tfds' archive
              # checksums do not apply to recompressed copies.
              force_checksums_validation=False, register_checksums=False))
  finally:
    shutil.rmtree(download_dir, ignore_errors=True)
  _write_source_record(builder.data_dir, folder, stats, checksums)
  return builder
