"""Class names for printing predictions.

Fashion-MNIST's ten names are here (from the dataset's documentation), so
they work offline. ImageNet's 1000 come from Keras
(`keras.applications.imagenet_utils.decode_predictions`), which downloads
`imagenet_class_index.json` once into `~/.keras/models/`; without it and
without a network they are unavailable and callers print class indices.
"""
from typing import List, Optional, Tuple

import numpy as np

FASHION_MNIST = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
IMAGENET_DATASETS = ('imagenet', 'imagenettfds')
IMAGENET_CLASSES = 1000


def imagenet_class_names() -> Tuple[Optional[List[str]], str]:
  """(names, '') or (None, why they are unavailable)."""
  from keras.applications import imagenet_utils  # pylint: disable=g-import-not-at-top
  try:
    decoded = imagenet_utils.decode_predictions(
        np.eye(IMAGENET_CLASSES, dtype=np.float32), top=1)
  except Exception as e:  # pylint: disable=broad-except
    # Keras raises a plain Exception for a failed download.
    return None, (
        'ImageNet class names are unavailable: Keras could not download '
        f'imagenet_class_index.json ({str(e).splitlines()[0][:120]}); '
        'printing class indices')
  return [row[0][1] for row in decoded], ''


def class_names(dataset: str, num_classes: int
                ) -> Optional[List[str]]:
  """The names for a dataset's classes, or None when unknown or unavailable."""
  return lookup(dataset, num_classes)[0]


def lookup(dataset: str, num_classes: int
           ) -> Tuple[Optional[List[str]], str]:
  """(names or None, a note saying why there are none; '' when not needed)."""
  if dataset == 'fashion_mnist' and num_classes == len(FASHION_MNIST):
    return list(FASHION_MNIST), ''
  if dataset in IMAGENET_DATASETS and num_classes == IMAGENET_CLASSES:
    return imagenet_class_names()
  return None, ''
