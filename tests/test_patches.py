"""The patch series and the tree never drift apart.

Reverse-applying patches/ to the current tree must succeed and give a
baseline that imports and behaves like upstream (no fashion_mnist, no
--ablation, no mixing for tfds inputs); applying it forward again must give
the current files back; patches/README.md's hunk map must list every hunk.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'patches'))
import patchset  # noqa: E402  pylint: disable=g-import-not-at-top

BASELINE_CHECKS = r'''
import copy
import os
from absl import flags
from automl_effnetv2 import datasets, hparams, main, progressive
try:
  datasets.get_dataset_class('fashion_mnist')
  raise SystemExit('baseline still has fashion_mnist')
except datasets.DatasetError:
  pass
for name in ('fashion_mnist', 'FashionMNISTFt', 'fashion_mnist_paper_range'):
  try:
    hparams.lookup(name, 'ds:')
    raise SystemExit(f'baseline still registers {name}')
  except hparams.ConfigError:
    pass
recipe_dir = os.path.join(os.path.dirname(datasets.__file__), 'recipes')
assert not os.path.exists(os.path.join(recipe_dir, 'fashion_mnist.yaml')), (
    'baseline still has the fashion_mnist recipe')
assert 'ablation' not in flags.FLAGS, 'baseline still has --ablation'
package = os.path.dirname(datasets.__file__)
assert not os.path.exists(os.path.join(package, 'study')), 'baseline has study/'
assert not os.path.exists(os.path.join(package, 'local_data.py'))
assert not hasattr(progressive, 'ABLATIONS')
config = main.build_config('efficientnetv2-b0', 'cifar10ft')
assert 'ablation' not in config.train
cifar = datasets.CIFAR10Input(is_training=True, image_size=32,
                              mixup_alpha=0.2, cutmix_alpha=0.2)
assert cifar.mixing_alphas() == (0.0, 0.0), 'upstream skips tfds mixing'
imagenet = datasets.ImageNetInput(is_training=True, image_size=32,
                                  mixup_alpha=0.2, cutmix_alpha=0.2)
assert imagenet.mixing_alphas() == (0.2, 0.2)
print('baseline ok')
'''


@pytest.fixture(scope='module')
def baseline(tmp_path_factory):
  return patchset.make_baseline(str(tmp_path_factory.mktemp('baseline')))


def test_baseline_behaves_like_upstream(baseline):
  env = dict(os.environ, PYTHONPATH=baseline, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', BASELINE_CHECKS], env=env,
                          cwd=baseline, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'baseline ok' in result.stdout


def test_series_applied_to_the_baseline_gives_the_tree_back(baseline):
  for name in patchset.series():
    patchset.git_apply(baseline, name)
  for path in patchset.all_patched_files():
    with open(os.path.join(baseline, path), encoding='utf-8') as f:
      rebuilt = f.read()
    with open(os.path.join(REPO, path), encoding='utf-8') as f:
      assert rebuilt == f.read(), path


def test_readme_hunk_map_lists_every_hunk():
  with open(os.path.join(REPO, 'patches', 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  for name in patchset.series():
    current_file = None
    with open(os.path.join(REPO, 'patches', name), encoding='utf-8') as f:
      for line in f:
        if line.startswith('diff --git a/'):
          current_file = line.split()[2][2:]
        match = re.match(r'^(@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@)', line)
        if match:
          entry = f'{name} | `{current_file}` | `{match.group(1)}`'
          assert entry in readme, f'patches/README.md lacks: {entry}'
