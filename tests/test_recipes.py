"""Training recipes: each YAML file is the one source of its config."""
import subprocess
import sys

import pytest

from automl_effnetv2 import hparams
from automl_effnetv2 import recipes
from automl_effnetv2 import run_config
from automl_effnetv2 import run_dir
from conftest import REPO


def _registered(name):
  config = run_config.build_config('efficientnetv2-b0', name)
  return run_dir.flatten(config.as_dict())


@pytest.mark.parametrize('name', recipes.recipe_names())
def test_every_value_a_recipe_file_sets_reaches_its_registered_config(name):
  # A recipe file named like a registered config is that config's source:
  # nothing in the code changes its values on the way.
  written = run_dir.flatten(hparams.load_yaml(recipes.recipe_path(name)))
  assert written
  registered = _registered(name)
  for key, value in written.items():
    assert registered[key] == value, key


def test_the_paper_range_recipe_differs_from_the_default_where_it_says():
  paper_range = _registered('fashion_mnist_paper_range')
  default = _registered('fashion_mnist')
  changed = {k for k in default if default[k] != paper_range[k]}
  written = run_dir.flatten(hparams.load_yaml(
      recipes.recipe_path('fashion_mnist_paper_range')))
  assert changed and changed == set(written)


@pytest.mark.parametrize('dataset_cfg,recipe', [
    ('fashion_mnist', 'fashion_mnist'),
    ('fashion_mnist', 'fashion_mnist_paper_range')])
def test_a_recipe_file_works_as_hparam_str(dataset_cfg, recipe):
  with_file = run_config.build_config('efficientnetv2-b0', dataset_cfg,
                                      recipes.recipe_path(recipe))
  assert with_file == run_config.build_config('efficientnetv2-b0', recipe)


def test_a_variant_overrides_its_base_and_may_not_add_keys(tmp_path,
                                                           monkeypatch):
  monkeypatch.setattr(recipes, 'RECIPE_DIR', str(tmp_path))
  (tmp_path / 'base.yaml').write_text('train:\n  stages: 3\n  epochs: 31\n')
  (tmp_path / 'more.yaml').write_text('train:\n  stages: 4\n')
  (tmp_path / 'typo.yaml').write_text('train:\n  stage: 4\n')
  loaded = recipes.load('base', 'more')
  assert loaded.as_dict() == {'train': {'stages': 4, 'epochs': 31}}
  assert recipes.recipe_names() == ['base', 'more', 'typo']
  with pytest.raises(hparams.ConfigError, match="'train.stage'.*stages"):
    recipes.load('base', 'typo')


def test_a_missing_recipe_file_says_to_reinstall(tmp_path, monkeypatch):
  monkeypatch.setattr(recipes, 'RECIPE_DIR', str(tmp_path))
  with pytest.raises(hparams.ConfigError, match='missing; reinstall'):
    recipes.load('fashion_mnist')


def test_an_installed_package_carries_every_recipe_file(tmp_path):
  # What `pip install .` copies: build_py lays out the package with its
  # package_data, without touching the source tree.
  subprocess.run([sys.executable, 'setup.py', '-q', 'build_py',
                  f'--build-lib={tmp_path}'], cwd=REPO, check=True,
                 capture_output=True)
  installed = tmp_path / 'automl_effnetv2' / 'recipes'
  for name in recipes.recipe_names():
    shipped = (installed / f'{name}.yaml').read_text(encoding='utf-8')
    with open(recipes.recipe_path(name), encoding='utf-8') as f:
      assert shipped == f.read()
