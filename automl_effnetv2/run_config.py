"""Assembles a run's config in upstream's override order.

Kept apart from main.py, which defines command-line flags on import, so that
the study runner and the benchmarks can build configs too.
"""
import copy

from absl import logging

from automl_effnetv2 import config_checks
from automl_effnetv2 import datasets
from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import hparams
from automl_effnetv2 import progressive
from automl_effnetv2 import strategy_choice


def build_config(model_name: str, dataset_cfg: str, hparam_str: str = '',
                 sweeps: str = '', ablation=None) -> hparams.Config:
  """Upstream's override order: base -> model -> dataset -> flags."""
  config = copy.deepcopy(hparams.base_config)
  config.override(effnetv2_configs.get_model_config(model_name))
  config.override(datasets.get_dataset_config(dataset_cfg))
  warn_ignored_keys(config, hparam_str, sweeps)
  config.override(hparam_str)
  config.override(sweeps)
  config.model.num_classes = config.data.num_classes
  # --ablation wins over a train.ablation set in hparam_str / a YAML file.
  progressive.ablate_config(config, ablation or config.train.ablation)
  config_checks.validate(config, strategy_choice.STRATEGIES)
  return config


def warn_ignored_keys(preset: hparams.Config, *overrides) -> list:
  """Logs one line naming the upstream keys the overrides set that this port
  ignores (hparams.IGNORED_UPSTREAM_KEYS); returns them."""
  config = copy.deepcopy(preset)
  for override in overrides:
    config.override(override)
  ignored = hparams.ignored_keys_set(config, preset)
  if ignored:
    logging.warning('ignored: %s (upstream keys this port does not use; see '
                    'hparams.IGNORED_UPSTREAM_KEYS)', ', '.join(ignored))
  return ignored
