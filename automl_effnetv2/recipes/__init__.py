"""Training recipes kept as data: one YAML file per recipe, in this folder.

A recipe holds a training config's tuned values, with the measurements that
chose them as comments beside each value. Tuning a recipe is an edit to its
file; the code that registers it (`datasets.py`) and the patch series that
adds it stay as they are.

`load('a', 'b')` reads `a.yaml` and overrides it with `b.yaml` (a recipe
elsewhere is named by its path, `/some/where/c.yaml`). The later
file may only change keys the earlier one has, so a variant lists just its
differences and a misspelt key in it is refused instead of ignored.
"""
import os
from typing import List

from automl_effnetv2 import hparams

RECIPE_DIR = os.path.dirname(os.path.abspath(__file__))


def recipe_path(name: str) -> str:
  """This folder's `<name>.yaml`; a name ending in .yaml is a path as is."""
  if name.endswith('.yaml'):
    return name
  return os.path.join(RECIPE_DIR, f'{name}.yaml')


def recipe_names() -> List[str]:
  return sorted(f[:-len('.yaml')] for f in os.listdir(RECIPE_DIR)
                if f.endswith('.yaml'))


def load(name: str, *variants: str) -> hparams.Config:
  """The recipe `name`, overridden in order by each recipe in `variants`."""
  for each in (name,) + variants:
    path = recipe_path(each)
    if os.path.isfile(path):
      continue
    if each.endswith('.yaml'):
      raise hparams.ConfigError(f'recipe file {path!r} does not exist; '
                                'check the path')
    # Only a broken installation gets here: the files ship with the code.
    raise hparams.ConfigError(
        f'recipe file {path!r} is missing; reinstall the package '
        '(setup.py installs automl_effnetv2/recipes/*.yaml)')
  config = hparams.Config(hparams.load_yaml(recipe_path(name)))
  for variant in variants:
    config.override(recipe_path(variant))
  return config
