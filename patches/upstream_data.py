r"""Prepares tfds' `fashion_mnist` for upstream's code, offline, from IDX files.

  python patches/upstream_data.py [--source DIR] [--tfds_data_dir DIR]

Run it with the Python of the environment from upstream-requirements.txt, so
that the prepared copy is written by the tfds version upstream reads it with.
--source holds the four standard files (train-images-idx3-ubyte.gz, ...;
default: Debian's dataset-fashion-mnist package folder). --tfds_data_dir is
where tfds datasets live (default: $TFDS_DATA_DIR, else
~/tensorflow_datasets); pass the same folder to upstream's main.py as
--data_dir (with the fix-tfds-data-dir commit) or as TFDS_DATA_DIR.

tfds cannot download without a network, and its recorded checksums are those
of the original archives, not of recompressed copies such as Debian's. This
command checks the files itself (IDX headers, counts, md5 of the decompressed
bytes) and has tfds build the dataset from them, with the port's
`automl_effnetv2/local_data.py`. A second run with the same files does
nothing.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
# local_data needs only the standard library and tensorflow_datasets.
from automl_effnetv2 import local_data  # noqa: E402  pylint: disable=g-import-not-at-top


HINT = ("install the files with 'apt-get install -y dataset-fashion-mnist' "
        f'(they land in {local_data.DEBIAN_FASHION_MNIST_DIR}) or pass '
        '--source=<folder with ' + ', '.join(local_data.FASHION_MNIST_FILES) +
        '>')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--source', default=None,
                      help='folder with the four IDX .gz files (default: '
                      f'{local_data.DEBIAN_FASHION_MNIST_DIR})')
  parser.add_argument('--tfds_data_dir', default=None,
                      help='tfds data folder (default: $TFDS_DATA_DIR, else '
                      '~/tensorflow_datasets)')
  args = parser.parse_args(argv)
  source = args.source or local_data.default_fashion_mnist_dir()
  if source is None:
    print(f'error: no Fashion-MNIST files found: {HINT}', file=sys.stderr)
    return 1
  try:
    import tensorflow_datasets  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    print(f'error: tensorflow_datasets does not import ({e}); run this with '
          'the Python of the environment from '
          'patches/upstream-requirements.txt', file=sys.stderr)
    return 1
  tfds_dir = args.tfds_data_dir and os.path.expanduser(args.tfds_data_dir)
  try:
    builder = local_data.prepare_fashion_mnist(source, tfds_dir)
  except local_data.DataFilesError as e:
    print(f'error: {str(e).replace(local_data.INSTALL_HINT, HINT)}',
          file=sys.stderr)
    return 1
  splits = ', '.join(f'{name} {split.num_examples}'
                     for name, split in sorted(builder.info.splits.items()))
  root = os.path.dirname(os.path.dirname(builder.data_dir))
  print(f'fashion_mnist {builder.info.version} ready in {builder.data_dir} '
        f'({splits}) from {source}; run upstream with --data_dir={root} or '
        f'TFDS_DATA_DIR={root}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
