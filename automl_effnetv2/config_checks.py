"""Checks the values of an assembled config before anything runs.

`hparams` refuses unknown keys and words where numbers belong; this module
refuses numbers that cannot mean anything (a negative batch, zero training
steps, an infinite learning rate, a probability above one, images smaller
than the model can use) and names that select nothing (an optimizer, a
learning-rate schedule, a loss, an activation that does not exist). Each
problem is reported with its key, its value and the valid range or names,
all in one `ConfigError` line.
"""
import math
from typing import Callable, List, Optional, Tuple

from automl_effnetv2 import augment_spec
from automl_effnetv2 import datasets
from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import hparams
from automl_effnetv2 import progressive
from automl_effnetv2 import registry
from automl_effnetv2 import strategy_choice
from automl_effnetv2 import utils

# Upstream rounds ratio sizes down to multiples of 16 (train.isize <= 16), so
# 16 px is the smallest size it can produce; below it the five stride-2
# reductions leave nothing but 1x1 maps after the second stage.
MIN_IMAGE_SIZE = 16


def _is_int(value) -> bool:
  return hparams.is_number(value) and float(value).is_integer()


# key: (accepts None, test, the valid range in words)
_Rule = Tuple[bool, Callable[[float], bool], str]
_RULES = {
    'train.batch_size': (False, lambda v: _is_int(v) and v >= 1,
                         'an integer >= 1'),
    'eval.batch_size': (False, lambda v: _is_int(v) and v >= 1,
                        'an integer >= 1'),
    'train.epochs': (False, lambda v: v >= 0, 'a number >= 0'),
    'train.min_steps': (True, lambda v: _is_int(v) and v >= 0,
                        'an integer >= 0'),
    'train.stages': (True, lambda v: _is_int(v) and v >= 0, 'an integer >= 0'),
    'train.lr_base': (False, lambda v: v >= 0, 'a number >= 0'),
    'train.lr_min': (True, lambda v: v >= 0, 'a number >= 0'),
    'train.lr_warmup_epoch': (True, lambda v: v >= 0, 'a number >= 0'),
    'train.lr_decay_epoch': (True, lambda v: v > 0, 'a number > 0'),
    'train.lr_decay_factor': (True, lambda v: 0 < v <= 1, 'in (0, 1]'),
    'train.weight_decay': (True, lambda v: v >= 0, 'a number >= 0'),
    'train.gclip': (True, lambda v: v >= 0, 'a number >= 0 (0: off)'),
    'train.label_smoothing': (True, lambda v: 0 <= v <= 1, 'in [0, 1]'),
    'train.ema_decay': (True, lambda v: 0 <= v < 1, 'in [0, 1) (0: off)'),
    'model.dropout_rate': (True, lambda v: 0 <= v < 1, 'in [0, 1)'),
    'model.conv_dropout': (True, lambda v: 0 <= v < 1, 'in [0, 1)'),
    'model.survival_prob': (True, lambda v: 0 < v <= 1, 'in (0, 1]'),
    'data.mixup_alpha': (True, lambda v: v >= 0, 'a number >= 0 (0: off)'),
    'data.cutmix_alpha': (True, lambda v: v >= 0, 'a number >= 0 (0: off)'),
    'data.shuffle_size_k': (True, lambda v: v > 0,
                            "a number > 0 (None: the input's own)"),
    'data.parallel_calls': (True, lambda v: _is_int(v) and v >= 1,
                            'an integer >= 1 (None: autotune)'),
    'runtime.log_step_count_steps': (False, lambda v: _is_int(v) and v >= 1,
                                     'an integer >= 1'),
    'runtime.save_checkpoints_steps': (False, lambda v: _is_int(v) and v >= 1,
                                       'an integer >= 1'),
    'runtime.keep_checkpoint_max': (False, lambda v: _is_int(v) and v >= 1,
                                    'an integer >= 1'),
}


def _get(config: hparams.Config, key: str):
  node = config
  for part in key.split('.'):
    if not isinstance(node, hparams.Config) or part not in node:
      return None
    node = node[part]
  return node


def _non_finite(tree, prefix='') -> List[str]:
  """Keys anywhere in the tree holding inf or nan (1e999 parses to inf)."""
  found = []
  for key, value in tree.items():
    path = prefix + str(key)
    if isinstance(value, dict):
      found += _non_finite(value, path + '.')
    elif hparams.is_number(value) and not math.isfinite(value):
      found.append(f'{path}={value} is not a finite number')
  return found


def _range_problems(config) -> List[str]:
  problems = []
  for key, (allows_none, test, valid) in _RULES.items():
    value = _get(config, key)
    if value is None and allows_none:
      continue
    if not (hparams.is_number(value) and math.isfinite(value) and
            test(value)):
      problems.append(f'{key}={value!r} is out of range: expected {valid}')
  return problems


def _choices(config) -> List[Tuple[str, tuple]]:
  """(key, valid values) of every key that names one of a few choices.

  Read where the choice is made, so that the lists cannot drift apart.
  """
  return [
      ('train.optimizer', utils.OPTIMIZERS),
      ('train.lr_sched', utils.LR_SCHEDULES),
      ('train.loss_type', utils.LOSS_TYPES),
      ('train.split', (None,) + tuple(config.data.splits)),
      ('eval.split', (None,) + tuple(config.data.splits)),
      ('model.act_fn', (None,) + utils.ACTIVATIONS),
      ('model.bn_type', effnetv2_model.BN_TYPES),
      ('model.data_format', (None, 'channels_last')),
      ('data.ds_name', tuple(datasets.dataset_classes())),
  ]


def _name_problems(config, strategies) -> List[str]:
  """Names that select nothing; each listed with the valid names."""
  problems = []
  for key, valid in _choices(config):
    try:
      registry.check_name(key, _get(config, key), valid)
    except ValueError as e:
      problems.append(str(e))
  # Upstream's aliases (gpus, gpu) are accepted but not offered: --strategy
  # takes only this port's names.
  strategy = config.runtime.strategy
  if strategies and strategy_choice.canonical_name(strategy) not in strategies:
    problems.append(registry.unknown_name_message('runtime.strategy',
                                                  strategy, strategies))
  precision = config.runtime.mixed_precision
  if not isinstance(precision, bool):
    try:
      utils.precision_policy(precision, 'CPU')
    except ValueError as e:
      problems.append(str(e))
  if config.model.blocks_args is not None:  # Holds each block's conv type.
    try:
      effnetv2_configs.decode(config.model.blocks_args)
    except ValueError as e:
      problems.append(f'model.blocks_args: {e}')
  return problems


def _size_problems(config) -> List[str]:
  """Training steps and image sizes."""
  problems = []
  train = config.train
  split = config.data.splits.get(train.split or 'train')
  num_images = split.get('num_images') if split else None
  if not num_images:
    return problems
  plan = progressive.run_plan(config)
  total = plan.total_steps
  if total < 1:
    problems.append(
        f'train.epochs={train.epochs} with train.min_steps='
        f'{train.min_steps} and train.batch_size={train.batch_size} gives '
        f'{total} training steps on {num_images} images; expected >= 1 step '
        '(raise train.epochs or train.min_steps)')
    return problems
  eval_isize = config.eval.isize
  if eval_isize is not None and eval_isize < MIN_IMAGE_SIZE:
    problems.append(f'eval.isize={eval_isize} is below the model\'s minimum '
                    f'image size: expected >= {MIN_IMAGE_SIZE}')
    return problems
  sizes = [s.image_size for s in plan.stages]
  if min(sizes) < MIN_IMAGE_SIZE:
    problems.append(
        f'train.isize={train.isize} with eval.isize={eval_isize} and '
        f'data.ibase={config.data.ibase} gives training images of '
        f'{min(sizes)} px; expected >= {MIN_IMAGE_SIZE} (the model\'s '
        'minimum)')
  return problems


def validate(config: hparams.Config, strategies: Optional[tuple] = None):
  """Raises ConfigError naming every out-of-range value of `config`.

  `strategies`, when given, are the valid runtime.strategy names (upstream's
  aliases of them pass too).
  """
  problems = _non_finite(config.as_dict())
  if not problems:
    problems = _range_problems(config) + _name_problems(config, strategies)
    try:  # The augmentation keys are checked where they are read.
      augment_spec.AugmentSpec.from_config(config.data)
    except hparams.ConfigError as e:
      problems.append(str(e))
  if not problems:
    problems = _size_problems(config)
  if problems:
    raise hparams.ConfigError('; '.join(problems))
