"""Class names for printing predictions and for exported models.

Each dataset's Input class says what its label indices are called
(`datasets.Input.class_names`): Fashion-MNIST's ten names are written there,
so they work offline. ImageNet's 1000 come from Keras
(`keras.applications.imagenet_utils.decode_predictions`), which downloads
`imagenet_class_index.json` once into `~/.keras/models/`; without it and
without a network they are unavailable and callers print class indices.
"""
from typing import List, Optional, Tuple

import numpy as np

from automl_effnetv2 import datasets

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
  """(names or None, a note saying why there are none; '' when not needed).

  Names are given only when they fit the model's class count.
  """
  try:
    names = datasets.get_dataset_class(dataset).class_names
  except datasets.DatasetError:  # A dataset this version does not know.
    return None, ''
  if names == datasets.KERAS_IMAGENET_CLASSES:
    if num_classes == IMAGENET_CLASSES:
      return imagenet_class_names()
    return None, ''
  if names and len(names) == num_classes:
    return list(names), ''
  return None, ''
