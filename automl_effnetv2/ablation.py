r"""The progressive-learning study's command line; the runner is study/runner.py.

  python -m automl_effnetv2.ablation \
      --dataset_cfg=fashion_mnist,fashion_mnist_paper_range \
      --modes=none,no_progressive --seeds=3 --epochs=10 \
      --output_dir=runs/study --results_dir=docs/study

`--helpfull` lists every flag; docs/study.md has the study's own commands.
"""
import os
import sys

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app

from automl_effnetv2 import cli
from automl_effnetv2.study import runner

if __name__ == '__main__':
  runner.define_flags()
  app.run(runner.main, flags_parser=cli.parse_flags)
