"""Assembles a run's config in upstream's override order.

Kept apart from main.py, which defines command-line flags on import, so that
the study runner and the benchmarks can build configs too.
"""
import copy

from automl_effnetv2 import datasets
from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import hparams
from automl_effnetv2 import progressive


def build_config(model_name: str, dataset_cfg: str, hparam_str: str = '',
                 sweeps: str = '', ablation=None) -> hparams.Config:
  """Upstream's override order: base -> model -> dataset -> flags."""
  config = copy.deepcopy(hparams.base_config)
  config.override(effnetv2_configs.get_model_config(model_name))
  # The dataset config also brings its dataset's facts (splits, tfds name),
  # some of which are keys the base config does not have.
  config.override(datasets.get_dataset_config(dataset_cfg),
                  allow_new_keys=True)
  config.override(hparam_str)
  config.override(sweeps)
  config.model.num_classes = config.data.num_classes
  # --ablation wins over a train.ablation set in hparam_str / a YAML file.
  progressive.ablate_config(config, ablation or config.train.ablation)
  return config
