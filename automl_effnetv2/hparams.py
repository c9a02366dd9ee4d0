"""Nested configuration tree, its command-line syntax, and a name registry.

A run is described by one `Config` tree, assembled in a fixed order
(base -> model -> dataset -> `--hparam_str` -> `--sweeps`) and saved as YAML
next to the checkpoints, so the saved file alone reproduces the run.

`override` refuses keys that do not exist (a typo must never pass silently);
`update` may add keys.
"""
import ast
import copy
import os
from typing import Any, Dict, Iterator, List

import yaml

from automl_effnetv2 import registry


class ConfigError(ValueError):
  """A configuration key or value that cannot be used, with the fix in it."""


def parse_value(text: str) -> Any:
  """Parses one command-line value: `true`/`false`, Python literals, `a|b` lists.

  Anything that is not a literal stays a string (`augname=randaug`).
  """
  text = text.strip()
  if '|' in text:
    return [parse_value(part) for part in text.split('|')]
  if text in ('true', 'True'):
    return True
  if text in ('false', 'False'):
    return False
  if text in ('none', 'None', 'null'):
    return None
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_hparam_str(text: str) -> Dict[str, Any]:
  """Turns `'a.b=1,c=x|y'` into `{'a': {'b': 1}, 'c': ['x', 'y']}`."""
  result: Dict[str, Any] = {}
  for pair in text.split(','):
    if not pair.strip():
      continue
    if pair.count('=') != 1:
      raise ConfigError(
          f'malformed hparam {pair!r} in {text!r}: expected key=value pairs '
          "separated by commas, e.g. 'train.batch_size=64,data.ram=10' "
          "(lists use '|': 'a=1|2')")
    key, value = pair.split('=')
    key = key.strip()
    if not key or any(not part for part in key.split('.')):
      raise ConfigError(f'malformed hparam key {key!r} in {text!r}')
    node = result
    parts = key.split('.')
    for part in parts[:-1]:
      child = node.setdefault(part, {})
      if not isinstance(child, dict):
        raise ConfigError(f'hparam {key!r} conflicts with an earlier value in '
                          f'{text!r}')
      node = child
    node[parts[-1]] = parse_value(value)
  return result


def load_yaml(path: str) -> Dict[str, Any]:
  """Reads a YAML mapping with the safe loader (no arbitrary objects)."""
  if not os.path.isfile(path):
    raise ConfigError(f'config file {path!r} does not exist; pass an existing '
                      '.yaml file or key=value pairs')
  with open(path, 'r', encoding='utf-8') as f:
    try:
      loaded = yaml.safe_load(f)
    except yaml.YAMLError as e:
      raise ConfigError(f'config file {path!r} is not valid YAML: {e}') from e
  if loaded is None:
    return {}
  if not isinstance(loaded, dict):
    raise ConfigError(f'config file {path!r} must hold a mapping of keys, '
                      f'found {type(loaded).__name__}')
  return loaded


class Config:
  """A tree of settings with attribute and item access.

  Setting a value stores a deep copy, and plain dicts become `Config` nodes,
  so two configs never share mutable state.
  """

  def __init__(self, *args, **kwargs):
    object.__setattr__(self, '_data', {})
    self.update(dict(*args, **kwargs))

  # -- access ---------------------------------------------------------------
  def __getattr__(self, key):
    data = object.__getattribute__(self, '_data')
    if key in data:
      return data[key]
    raise AttributeError(_unknown_key_message(key, list(data)))

  def __setattr__(self, key, value):
    self._data[key] = _to_config(value)

  def __getitem__(self, key):
    if key not in self._data:
      raise KeyError(_unknown_key_message(key, list(self._data)))
    return self._data[key]

  def __setitem__(self, key, value):
    self.__setattr__(key, value)

  def __contains__(self, key):
    return key in self._data

  def __iter__(self) -> Iterator[str]:
    return iter(self._data)

  def __len__(self):
    return len(self._data)

  def __eq__(self, other):
    if isinstance(other, Config):
      return self.as_dict() == other.as_dict()
    if isinstance(other, dict):
      return self.as_dict() == other
    return NotImplemented

  def __deepcopy__(self, memo):
    return Config(copy.deepcopy(self.as_dict(), memo))

  def __getstate__(self):
    return self.as_dict()

  def __setstate__(self, state):
    object.__setattr__(self, '_data', {})
    self.update(state)

  def __repr__(self):
    return f'Config({self.as_dict()!r})'

  def __str__(self):
    return yaml.safe_dump(self.as_dict(), default_flow_style=False)

  def keys(self):
    return self._data.keys()

  def items(self):
    return self._data.items()

  def get(self, key, default=None):
    return self._data.get(key, default)

  def as_dict(self) -> Dict[str, Any]:
    return {k: _to_plain(v) for k, v in self._data.items()}

  # -- merging --------------------------------------------------------------
  def update(self, other):
    """Merges `other` (dict or Config) in, adding keys that do not exist."""
    self._merge(_as_mapping(other), allow_new_keys=True, prefix='')

  def override(self, other, allow_new_keys=False):
    """Merges a dict, a `'a.b=1,c=2'` string or a YAML path into this tree.

    Unknown keys raise `ConfigError` naming the key and the closest valid ones.
    """
    if other is None or (isinstance(other, str) and not other.strip()):
      return
    if isinstance(other, str):
      text = other.strip()
      if text.endswith(('.yaml', '.yml')) and '=' not in text:
        mapping = load_yaml(text)
      elif '=' in text:
        mapping = parse_hparam_str(text)
      else:
        raise ConfigError(
            f'cannot read overrides from {other!r}: give key=value pairs '
            "('train.batch_size=64') or a path ending in .yaml")
    else:
      mapping = _as_mapping(other)
    self._merge(mapping, allow_new_keys=allow_new_keys, prefix='')

  def _merge(self, mapping, allow_new_keys, prefix):
    for key, value in mapping.items():
      path = prefix + str(key)
      if key not in self._data:
        if not allow_new_keys:
          raise ConfigError(_unknown_key_message(path, self._paths(prefix)))
        self._data[key] = _to_config(value)
        continue
      current = self._data[key]
      if isinstance(current, Config) and isinstance(value, (dict, Config)):
        current._merge(_as_mapping(value), allow_new_keys, path + '.')
      elif isinstance(current, Config) and value is not None:
        raise ConfigError(
            f'{path!r} is a group of settings ({", ".join(current.keys())}); '
            f'set one of its keys, e.g. {path}.{next(iter(current.keys()))}=...')
      else:
        _check_value_type(path, current, value)
        self._data[key] = _to_config(value)

  def _paths(self, prefix) -> List[str]:
    return [prefix + k for k in self._data]

  # -- files ----------------------------------------------------------------
  def save_to_yaml(self, path: str):
    with open(path, 'w', encoding='utf-8') as f:
      yaml.safe_dump(self.as_dict(), f, default_flow_style=False)

  @classmethod
  def from_yaml(cls, path: str) -> 'Config':
    return cls(load_yaml(path))


def is_number(value) -> bool:
  """An int or a float; True and False, which Python counts as ints, not."""
  return isinstance(value, (int, float)) and not isinstance(value, bool)


# Switches that also take a word: runtime.mixed_precision names a Keras
# precision policy as well.
_SWITCHES_TAKING_WORDS = ('runtime.mixed_precision',)


def _check_value_type(path, current, value):
  """Rejects a word where a number or a switch belongs
  (`train.batch_size=abc`, `train.sched_dropout=maybe`)."""
  if is_number(current) and isinstance(value, str):
    raise ConfigError(f'{path!r} takes a number, got {value!r}')
  if (isinstance(current, bool) and isinstance(value, str) and
      path not in _SWITCHES_TAKING_WORDS):
    raise ConfigError(f'{path!r} takes true or false, got {value!r}')


def _unknown_key_message(key, valid_keys) -> str:
  return registry.unknown_name_message('config key', key,
                                       sorted(set(valid_keys)))


def _as_mapping(value):
  if isinstance(value, Config):
    return value.as_dict()
  if isinstance(value, dict):
    return value
  raise ConfigError(f'expected a mapping of settings, got {value!r}')


def _to_config(value):
  if isinstance(value, Config):
    return copy.deepcopy(value)
  if isinstance(value, dict):
    return Config(value)
  return copy.deepcopy(value)


def _to_plain(value):
  if isinstance(value, Config):
    return value.as_dict()
  if isinstance(value, (list, tuple)):
    return [_to_plain(v) for v in value]
  return value


# -- upstream keys this port accepts but does not use -------------------------
# Kept in base_config so that upstream's config files and override strings
# merge; setting one changes nothing here, and `ignored_keys_set` names them.
IGNORED_UPSTREAM_KEYS = {
    'model.local_pooling': 'an export detail; the same average as global '
                           'pooling',
    'train.ft_init_ema': 'ft_init_ckpt is a Keras weights file, already the '
                         'EMA weights when exported by this port',
    'data.try_gcs': "upstream also reads the dataset class's own setting",
    'data.resize': 'unused upstream too',
    'runtime.iterations_per_loop': 'a TPUEstimator setting; see '
                                   'runtime.log_step_count_steps and '
                                   'runtime.save_checkpoints_steps',
    'runtime.skip_host_call': 'a TPUEstimator setting',
    'runtime.use_async_checkpointing': 'unused upstream too',
}


def _leaf(config, dotted_key):
  node = config
  for part in dotted_key.split('.'):
    if not isinstance(node, Config) or part not in node:
      return None
    node = node[part]
  return node


def ignored_keys_set(config: 'Config', reference: 'Config') -> List[str]:
  """The ignored upstream keys whose value differs from `reference`'s."""
  return [key for key in IGNORED_UPSTREAM_KEYS
          if _leaf(config, key) != _leaf(reference, key)]


# -- registry -----------------------------------------------------------------
# One table per prefix ('ds:' holds the dataset training configs).
_REGISTRIES: Dict[str, registry.Registry] = {}


def _registry(prefix: str) -> registry.Registry:
  return _REGISTRIES.setdefault(prefix, registry.Registry('name', ConfigError))


def register(cls=None, prefix='effnet:', name=None):
  """Registers a class under its lower-cased name (or `name`).

  Works as `@register` and as `@register(name='my_config')`.
  """
  if cls is None:
    return lambda c: register(c, prefix=prefix, name=name)
  return _registry(prefix).register(cls, name=name)


def registered_names(prefix='effnet:') -> List[str]:
  return _registry(prefix).names()


def lookup(name: str, prefix='effnet:'):
  """Finds a registered class by name, ignoring case."""
  return _registry(prefix).get(name)


# Upstream's defaults (hparams.py at google/automl a6bb1ff), key for key.
# Additions for this port are marked; see docs/deviations.md.
base_config = Config(
    model=dict(
        model_name='efficientnet-b0',
        data_format='channels_last',
        feature_size=1280,
        bn_type=None,
        bn_momentum=0.9,
        bn_epsilon=1e-3,
        gn_groups=8,
        # Port addition: BN through TF's fused kernel, as upstream's TF2 Keras
        # did; False uses Keras 3's composed ops (see docs/deviations.md).
        fused_bn=True,
        # Port addition: on CPU, depthwise kernel gradients of <= 2x2 maps are
        # summed tap by tap, TF's kernel being slow there (same maths; see
        # docs/deviations.md); False uses TF's kernel throughout.
        small_map_depthwise_grad=True,
        depth_divisor=8,
        min_depth=8,
        act_fn='silu',
        survival_prob=0.8,
        local_pooling=False,
        headbias=None,
        conv_dropout=None,
        dropout_rate=None,
        depth_coefficient=None,
        width_coefficient=None,
        blocks_args=None,  # list of block strings, see effnetv2_configs.
        num_classes=1000,
    ),
    train=dict(
        stages=0,
        epochs=350,
        min_steps=0,
        optimizer='rmsprop',
        lr_sched='exponential',
        lr_base=0.016,
        lr_decay_epoch=2.4,
        lr_decay_factor=0.97,
        lr_warmup_epoch=5,
        lr_min=0,
        ema_decay=0.9999,
        weight_decay=1e-5,
        weight_decay_inc=0.0,
        weight_decay_exclude='.*(bias|gamma|beta).*',
        label_smoothing=0.1,
        gclip=0,
        # Port: True reads every stage from the start of a new input
        # stream, as upstream's stage loop builds a new input per stage
        # (for an unshuffled source each stage then starts again at the
        # same examples); False, one stream through the stages.
        restart_input_each_stage=False,
        batch_size=4096,
        isize=None,
        split=None,
        loss_type=None,
        ft_init_ckpt=None,
        ft_init_ema=True,
        varsexp=None,
        sched=None,
        # Port: the paper also ramps dropout per stage; upstream computes that
        # list and discards it, so it is off by default.
        sched_dropout=False,
        # Port: progressive-learning ablation (progressive.ABLATIONS).
        ablation='none',
    ),
    eval=dict(
        batch_size=8,
        isize=None,
        split=None,
        # Port additions: evaluate during training every so many steps or
        # epochs (0: off, as upstream's trainer does not evaluate while it
        # trains), for time-to-accuracy curves in metrics.json.
        every_steps=0,
        every_epochs=0,
    ),
    data=dict(
        ds_name='imagenet',
        augname='randaug',
        ra_num_layers=2,
        ram=15,
        mixup_alpha=0.,
        cutmix_alpha=0.,
        ibase=128,
        cache=True,
        resize=None,
        data_dir=None,
        multiclass=None,
        num_classes=1000,
        tfds_name=None,
        try_gcs=False,
        tfds_split=None,
        splits=dict(
            train=dict(num_images=None, files=None, tfds_split=None,
                       slice=None),
            eval=dict(num_images=None, files=None, tfds_split=None, slice=None),
            minival=dict(num_images=None, files=None, tfds_split=None,
                         slice=None),
            trainval=dict(num_images=None, files=None, tfds_split=None,
                          slice=None),
        ),
        # Port additions: augmentation pixel constants (None keeps upstream's)
        # and where tfds keeps prepared datasets (None: tfds' default).
        translate_const=None,
        cutout_const=None,
        # Port additions: RandAugment's op names (None: upstream's 16; on the
        # command line 'Rotate|Cutout') and the pixel value that geometric
        # ops and cutout leave behind (None: upstream's gray 128).
        ra_ops=None,
        aug_fill=None,
        tfds_data_dir=None,
        # Port addition: tf.data map parallelism; None lets the autotuner
        # choose (upstream's AUTOTUNE everywhere).
        parallel_calls=None,
        # Port addition: the training shuffle buffer in units of 1,024
        # examples (upstream's Input attribute shuffle_size_k); None keeps
        # each input's own: 128 (TFRecords), 16 (cached tfds datasets).
        shuffle_size_k=None,
        # Port addition: True keeps upstream's Solarize threshold, which
        # wraps modulo 256 from magnitude 10 up; False: thresholds >= 256
        # leave the image unchanged (autoaugment.solarize_threshold).
        solarize_wrap=True,
        # Port addition: 'pil' computes Contrast and Sharpness as PIL does
        # (docs/deviations.md); 'upstream' gives upstream's pixels, for runs
        # compared side by side with upstream's code.
        enhance_pixels='pil',
    ),
    runtime=dict(
        iterations_per_loop=1000,
        skip_host_call=False,
        mixed_precision=True,  # Or a Keras policy name (port addition).
        use_async_checkpointing=False,
        log_step_count_steps=64,
        keep_checkpoint_max=5,
        keep_checkpoint_every_n_hours=5,
        # Port additions: tf.distribute strategy, seeding and checkpointing.
        strategy='auto',
        seed=0,
        deterministic=False,
        save_checkpoints_steps=500,
        tpu=None,
        jit_compile=False,  # XLA for the train step.
        # Port addition: optimizer settings changed by --resume_from, one
        # {step, resumed_from, changed} entry each, written by the trainer
        # (a runtime key, so resuming never compares it).
        config_changes=None,
    ),
)
