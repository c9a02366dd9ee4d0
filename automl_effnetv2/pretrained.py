"""Loads pretrained EfficientNet weights into the port's model, by name.

`train.ft_init_ckpt` may point at any of:
- upstream's released checkpoints (the folder unpacked from an
  `efficientnetv2-*.tgz` archive, or a checkpoint prefix / `.index` file):
  name-based TensorFlow checkpoints, variables under the model-name scope
  (`efficientnetv2-b0/blocks_3/se/conv2d_1/bias`). Where a variable has an
  exponential-moving-average shadow (`.../ExponentialMovingAverage`), the
  shadow is loaded, as upstream's evaluation and fine-tuning do
  (`train.ft_init_ema`, default true);
- Keras' EfficientNetV2 weight files: the legacy `.h5` files that
  `keras.applications.EfficientNetV2*(weights='imagenet')` caches in
  `~/.keras/models/` (`efficientnetv2-b0.h5`, `efficientnetv2-b0_notop.h5`),
  and the `.weights.h5` of any `keras.applications.EfficientNetV2*` model;
- this port's exports (`export/ema.weights.h5`, `export/model.keras`).

Every variable of the model must find its counterpart, and every model
variable of the file must be used. The one exception is the classification
head when the class counts differ (or the file has none): it stays at its
initialization and the summary says so. Anything else (another variant,
other shapes, missing or extra variables, an unreadable file) raises
`PretrainedError` before a single variable is assigned.

`TOP_LAYER_NAMES` and `BLOCK_LAYER_NAMES` are the one table of layer names
across the three namings.
"""
import copy
import dataclasses
import glob
import io
import json
import os
import re
import zipfile
from typing import Callable, Dict, List, Optional, Tuple

import h5py
import keras
import numpy as np
import tensorflow as tf

from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import hparams


class PretrainedError(ValueError):
  """The weights cannot be loaded as they are; the message says why."""


# -- the name table -----------------------------------------------------------
# (port layer, keras.applications layer, upstream layer). Block layers carry
# the suffix after `blocks_<i>_` (port) or `block<stage><letter>_` (Keras);
# upstream names its block layers by kind and creation order: a '#' stands
# for '' on the first conv2d / tpu_batch_normalization a block creates and
# '_1', '_2' on the next ones (effnetv2_model.py's get_conv_name and
# get_norm_name), so the number depends on which layers the block has.
TOP_LAYER_NAMES = (
    ('stem_conv', 'stem_conv', 'stem/conv2d'),
    ('stem_bn', 'stem_bn', 'stem/tpu_batch_normalization'),
    ('head_conv', 'top_conv', 'head/conv2d'),
    ('head_bn', 'top_bn', 'head/tpu_batch_normalization'),
    ('head_dense', 'predictions', 'head/dense'),
)
BLOCK_LAYER_NAMES = (
    ('expand_conv', 'expand_conv', 'conv2d#'),
    ('expand_bn', 'expand_bn', 'tpu_batch_normalization#'),
    ('dwconv', 'dwconv2', 'depthwise_conv2d'),
    ('bn', 'bn', 'tpu_batch_normalization#'),
    ('se_reduce', 'se_reduce', 'se/conv2d'),
    ('se_expand', 'se_expand', 'se/conv2d_1'),
    ('project_conv', 'project_conv', 'conv2d#'),
    ('project_bn', 'project_bn', 'tpu_batch_normalization#'),
)
# Keras 3 calls every depthwise kernel `kernel`; upstream and Keras 2 files
# say `depthwise_kernel`.
DEPTHWISE_KERNEL = 'depthwise_kernel'
EMA_SUFFIX = '/ExponentialMovingAverage'
# Optimizer slots in upstream's training checkpoints (RMSProp's two, momentum).
OPTIMIZER_SLOT = re.compile(r'/(RMSProp(_1)?|Momentum)$')
# Keras' in-model input scaling; the port scales in the input pipeline.
KERAS_PREPROCESSING_LAYER = re.compile(r'^(rescaling|normalization)(_\d+)?$')
# The port's per-stage dropout rate and survival probabilities: settings of
# the run, not learned weights.
PORT_SCHEDULE_LAYER = re.compile(r'^(blocks_\d+_drop|head_dropout)$')
HEAD_LAYER = 'head_dense'

PORT, KERAS, UPSTREAM = 'port', 'keras', 'upstream'


@dataclasses.dataclass(frozen=True)
class LayerNames:
  port: str
  keras: str
  upstream: str


def _block_stages(mconfig) -> List[Tuple[int, int]]:
  """(stage, repeat) of every block, in the port's block order."""
  positions = []
  for stage, args in enumerate(effnetv2_configs.decode(mconfig.blocks_args)):
    repeats = effnetv2_model.round_repeats(args.num_repeat,
                                           mconfig.depth_coefficient)
    positions.extend((stage, repeat) for repeat in range(repeats))
  return positions


def _upstream_numbered(template: str, counters: Dict[str, int]) -> str:
  if not template.endswith('#'):
    return template
  kind = template[:-1]
  count = counters.get(kind, 0)
  counters[kind] = count + 1
  return kind + (f'_{count}' if count else '')


def layer_names(model) -> Dict[str, LayerNames]:
  """The three names of every port layer that holds weights to load."""
  present = {layer.name for layer in model.layers if _loadable(layer)}
  table = {}
  for port, keras_name, upstream in TOP_LAYER_NAMES:
    if port in present:
      table[port] = LayerNames(port, keras_name, upstream)
  for index, (stage, repeat) in enumerate(_block_stages(model.mconfig)):
    counters = {}
    keras_block = f'block{stage + 1}{chr(ord("a") + repeat)}'
    for suffix, keras_suffix, upstream in BLOCK_LAYER_NAMES:
      port = f'blocks_{index}_{suffix}'
      if port in present:
        table[port] = LayerNames(
            port, f'{keras_block}_{keras_suffix}',
            f'blocks_{index}/{_upstream_numbered(upstream, counters)}')
  unnamed = present - set(table)
  if unnamed:
    raise PretrainedError(f'no pretrained names for layers {sorted(unnamed)}')
  return table


def _loadable(layer) -> bool:
  """Layers with weights (the per-stage rates are plain variables, not
  weights, so they never reach a weights file)."""
  return bool(layer.weights)


def upstream_variable_names(model, scope: Optional[str] = None
                            ) -> Dict[str, str]:
  """{port variable path: upstream checkpoint name} (without EMA suffix)."""
  scope = scope or model.name
  table = layer_names(model)
  names = {}
  for layer in model.layers:
    if not _loadable(layer):
      continue
    upstream_layer = table[layer.name].upstream
    for variable in layer.weights:
      name = variable.name
      if isinstance(layer, keras.layers.DepthwiseConv2D):
        name = DEPTHWISE_KERNEL
      names[variable.path] = f'{scope}/{upstream_layer}/{name}'
  return names


# -- reading the files ---------------------------------------------------------
@dataclasses.dataclass
class Source:
  """A weight file read into memory, in its own naming.

  `tensors` is keyed '<layer>/<variable name>' for named files,
  '<layer>/vars/<index>' for Keras 3 `.weights.h5` files (which store no
  variable names), and by full checkpoint name for upstream's checkpoints.
  """
  path: str
  kind: str  # Human-readable format.
  naming: str  # PORT, KERAS or UPSTREAM layer names.
  indexed: bool
  tensors: Dict[str, Callable[[], np.ndarray]]
  shapes: Dict[str, Tuple[int, ...]]
  model_name: Optional[str] = None
  ignored: Tuple[str, ...] = ()


def read_weights(path: str) -> Source:
  """Detects the format of `path` and indexes its variables."""
  if not path:
    raise PretrainedError('no weights file given')
  path = os.path.expanduser(path)  # Config files cannot rely on a shell.
  if os.path.isdir(path):
    return _read_checkpoint(_checkpoint_in_folder(path))
  if path.endswith('.index') and os.path.isfile(path):
    return _read_checkpoint(path[:-len('.index')])
  if not os.path.exists(path):
    if os.path.isfile(path + '.index'):
      return _read_checkpoint(path)
    raise PretrainedError(f'{path} does not exist')
  if path.endswith('.keras'):
    return _read_keras_archive(path)
  if path.endswith(('.h5', '.hdf5')):
    return _read_h5(path, path)
  raise PretrainedError(
      f'{path}: unknown weights format; expected an upstream checkpoint '
      'folder or prefix, a Keras .h5 / .weights.h5 file or a .keras file')


def _checkpoint_in_folder(folder: str) -> str:
  # The `checkpoint` file inside upstream's archives may name a path on the
  # machine that trained it, so the `.index` files decide.
  indexes = sorted(glob.glob(os.path.join(folder, '*.index')))
  if not indexes:
    raise PretrainedError(
        f'{folder} holds no TensorFlow checkpoint (*.index); unpack '
        "upstream's efficientnetv2-*.tgz there, or point at a weights file")
  latest = tf.train.latest_checkpoint(folder)
  if latest and os.path.isfile(latest + '.index'):
    return latest

  def step(index_path):
    digits = re.findall(r'\d+', os.path.basename(index_path))
    return int(digits[-1]) if digits else -1

  return max(indexes, key=step)[:-len('.index')]


def _read_checkpoint(prefix: str) -> Source:
  try:
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
  except (tf.errors.OpError, ValueError) as e:
    raise PretrainedError(
        f'cannot read the checkpoint {prefix}: {_first_line(e)}') from e
  if '_CHECKPOINTABLE_OBJECT_GRAPH' in shapes:
    raise PretrainedError(
        f'{prefix} is an object-based checkpoint (a training checkpoint of '
        "this project?); use the run's export/ema.weights.h5 instead")
  scopes = sorted({name.split('/')[0] for name in shapes
                   if name.split('/')[1:3] == ['stem', 'conv2d']})
  if len(scopes) != 1:
    raise PretrainedError(
        f'{prefix} is not an EfficientNet checkpoint with upstream\'s '
        f'variable names (model scopes with a stem: {scopes or "none"})')
  scope = scopes[0]
  ignored = tuple(name for name in shapes if not name.startswith(scope + '/')
                  or OPTIMIZER_SLOT.search(name))
  names = [name for name in shapes if name not in set(ignored)]

  def getter(name):
    def read():
      try:
        return reader.get_tensor(name)
      # A short data file gives IndexError ('Read less bytes than
      # requested'), a corrupted one DataLossError.
      except (tf.errors.OpError, IndexError, RuntimeError) as e:
        raise PretrainedError(
            f'cannot read {name} from {prefix}: the checkpoint is truncated '
            f'or damaged ({_first_line(e)})') from e
    return read

  keys = _released_names(names, scope)
  return Source(prefix, "upstream's TensorFlow checkpoint", UPSTREAM,
                indexed=False, tensors={keys[n]: getter(n) for n in names},
                shapes={keys[n]: tuple(shapes[n]) for n in names},
                model_name=scope, ignored=ignored)


def _released_names(names, scope: str) -> Dict[str, str]:
  """Checkpoint name -> the name upstream's released checkpoints use.

  Upstream's main.py under TensorFlow 2.x builds the model in a graph, where
  Keras gives the classifier's scope the next free name, 'head_1' ('head' is
  the Head layer's own); its released checkpoints say '<model>/head/dense'.
  Checkpoints of such training runs read under the released names.
  """
  released = f'{scope}/head/dense/'
  written = f'{scope}/head_1/dense/'
  if any(n.startswith(released) for n in names):
    return {n: n for n in names}
  return {n: released + n[len(written):] if n.startswith(written) else n
          for n in names}


def _read_keras_archive(path: str) -> Source:
  try:
    with zipfile.ZipFile(path) as archive:
      weights = archive.read('model.weights.h5')
      config = json.loads(archive.read('config.json'))
  except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
    raise PretrainedError(
        f'cannot read the .keras file {path}: {_first_line(e)}') from e
  source = _read_h5(io.BytesIO(weights), path)
  source.model_name = config.get('config', {}).get('name') or source.model_name
  return source


def _read_h5(file_or_path, path: str) -> Source:
  """A legacy Keras .h5 (weights or full model) or a Keras 3 .weights.h5."""
  try:
    with h5py.File(file_or_path, 'r') as f:
      if 'layers' in f and 'layer_names' not in f.attrs:
        layers = _keras3_layers(f)
        indexed, model_name = True, None
      else:
        root = f['model_weights'] if 'model_weights' in f else f
        if 'layer_names' not in root.attrs:
          raise PretrainedError(
              f'{path} is an HDF5 file but not a Keras weights file')
        layers = _legacy_layers(root)
        indexed, model_name = False, _legacy_model_name(f)
  except (OSError, KeyError) as e:
    raise PretrainedError(
        f'cannot read {path}: truncated or not an HDF5 file '
        f'({_first_line(e)})') from e
  naming = _naming_of(layers, path)
  not_weights = (PORT_SCHEDULE_LAYER if naming == PORT else
                 KERAS_PREPROCESSING_LAYER)
  ignored = tuple(k for k in layers if not_weights.match(k))
  tensors, shapes = {}, {}
  for layer, variables in layers.items():
    if layer in ignored:
      continue
    for key, value in variables.items():
      tensors[f'{layer}/{key}'] = (lambda v=value: v)
      shapes[f'{layer}/{key}'] = value.shape
  kind = ('Keras .weights.h5' if indexed else 'Keras .h5') + (
      " (this project's names)" if naming == PORT else
      ' (keras.applications names)')
  return Source(path, kind, naming, indexed, tensors, shapes,
                model_name=model_name, ignored=ignored)


def _keras3_layers(f) -> Dict[str, Dict[str, np.ndarray]]:
  """{layer name: {'vars/<i>': array}}; the layer name is the group's attr."""
  layers = {}

  def visit(name, obj):
    if isinstance(obj, h5py.Group) and name.endswith('vars') and len(obj):
      layer = obj.attrs.get('name', name.rsplit('/', 2)[-2])
      layers[str(layer)] = {f'vars/{key}': np.asarray(obj[key])
                            for key in obj}

  f.visititems(visit)
  return layers


def _legacy_layers(root) -> Dict[str, Dict[str, np.ndarray]]:
  """{layer name: {variable name: array}} from Keras' legacy h5 layout."""
  layers = {}
  for layer in root.attrs['layer_names']:
    layer = layer.decode() if isinstance(layer, bytes) else str(layer)
    group = root[layer]
    variables = {}
    for weight in group.attrs.get('weight_names', []):
      weight = weight.decode() if isinstance(weight, bytes) else str(weight)
      # 'block4a_dwconv2/depthwise_kernel:0' (Keras 2) or '.../kernel' (3).
      short = weight.rsplit('/', 1)[-1].split(':')[0]
      variables['kernel' if short == DEPTHWISE_KERNEL else short] = (
          np.asarray(group[weight]))
    if variables:
      layers[layer] = variables
  return layers


def _legacy_model_name(f) -> Optional[str]:
  config = f.attrs.get('model_config')
  if config is None:
    return None
  config = json.loads(config.decode() if isinstance(config, bytes) else config)
  return config.get('config', {}).get('name')


def _naming_of(layers, path) -> str:
  names = set(layers)
  if any(re.match(r'blocks_\d+_', n) for n in names) or 'head_conv' in names:
    return PORT
  if any(re.match(r'block\d+[a-z]_', n) for n in names) or 'top_conv' in names:
    return KERAS
  raise PretrainedError(
      f'{path} holds no EfficientNet layers (layers: '
      f'{", ".join(sorted(names)[:5]) or "none"})')


def _first_line(error) -> str:
  text = str(getattr(error, 'message', None) or error).strip()
  return text.splitlines()[0] if text else type(error).__name__


# -- matching ------------------------------------------------------------------
@dataclasses.dataclass
class Plan:
  """What loading assigns, what it skips and why, and what does not fit."""
  assign: List[Tuple[object, str]]  # (model variable, source key)
  skipped: List[str]  # Human-readable, one per skipped variable group.
  missing: List[str]  # Model variables without a counterpart.
  mismatched: List[str]  # 'port (shape) <- key (shape)'.
  unused: List[str]  # File variables nothing took.
  from_ema: int = 0


def _source_key(variable, index: int, names: LayerNames, source: Source,
                upstream_names: Dict[str, str], use_ema: bool) -> str:
  if source.naming == UPSTREAM:
    key = upstream_names[variable.path]
    if use_ema and key + EMA_SUFFIX in source.shapes:
      return key + EMA_SUFFIX
    return key
  layer = names.port if source.naming == PORT else names.keras
  return f'{layer}/vars/{index}' if source.indexed else f'{layer}/{variable.name}'


def _file_variable(key: str) -> str:
  """The model variable a file entry stands for (EMA shadows fold in)."""
  return key[:-len(EMA_SUFFIX)] if key.endswith(EMA_SUFFIX) else key


def plan_loading(model, source: Source, use_ema: bool = True) -> Plan:
  """Pairs every model variable with a file entry, without assigning."""
  table = layer_names(model)
  upstream_names = (upstream_variable_names(model, source.model_name)
                    if source.naming == UPSTREAM else {})
  plan = Plan([], [], [], [], [])
  taken = set()
  head = []
  for layer in model.layers:
    if not _loadable(layer):
      continue
    for index, variable in enumerate(layer.weights):
      key = _source_key(variable, index, table[layer.name], source,
                        upstream_names, use_ema)
      if layer.name == HEAD_LAYER:
        head.append((variable, key))
        continue
      _pair(plan, taken, variable, key, source)
  head_note = _head_note(head, source)
  if head_note:
    plan.skipped.append(head_note)
    taken.update(_file_variable(key) for _, key in head)
  else:
    for variable, key in head:
      _pair(plan, taken, variable, key, source)
  if HEAD_LAYER not in table:
    head_keys = _file_head_keys(source)
    if head_keys:
      plan.skipped.append(f'{", ".join(head_keys)}: this model has no '
                          'classification head')
      taken.update(head_keys)
  plan.unused = sorted({_file_variable(k) for k in source.shapes} - taken)
  plan.from_ema = sum(key.endswith(EMA_SUFFIX) for _, key in plan.assign)
  return plan


def _pair(plan, taken, variable, key, source):
  if key not in source.shapes:
    plan.missing.append(f'{variable.path} ({key})')
    return
  taken.add(_file_variable(key))
  if tuple(variable.shape) != tuple(source.shapes[key]):
    plan.mismatched.append(f'{variable.path} {tuple(variable.shape)} <- {key} '
                           f'{tuple(source.shapes[key])}')
    return
  plan.assign.append((variable, key))


def _head_note(head, source) -> Optional[str]:
  """Why the head is skipped, or None when it loads (or must fail to)."""
  present = [key for _, key in head if key in source.shapes]
  paths = ', '.join(variable.path for variable, _ in head)
  if not present:
    return f'{paths}: the file has no classification head'
  kernel, kernel_key = head[0]
  if len(present) != len(head) or kernel_key not in source.shapes:
    return None
  file_shape = source.shapes[kernel_key]
  if (len(file_shape) == 2 and file_shape[0] == kernel.shape[0] and
      file_shape[1] != kernel.shape[1]):
    return (f'{paths}: the file has {file_shape[1]} classes, this model '
            f'{kernel.shape[1]}; left at their initialization')
  return None


def _file_head_keys(source) -> List[str]:
  marker = {PORT: HEAD_LAYER + '/', KERAS: 'predictions/',
            UPSTREAM: f'{source.model_name}/head/dense/'}[source.naming]
  return sorted({_file_variable(k) for k in source.shapes
                 if k.startswith(marker)})


# -- naming the architectures in messages --------------------------------------
def _fingerprint(num_blocks, stem_filters, head_filters):
  return (num_blocks, stem_filters, head_filters)


def _known_fingerprints() -> Dict[tuple, str]:
  known = {}
  for name in effnetv2_configs.model_names():
    config = copy.deepcopy(hparams.base_config)
    config.override(effnetv2_configs.get_model_config(name))
    mconfig = config.model
    blocks = effnetv2_model.expand_block_args(mconfig)
    known[_fingerprint(
        len(blocks), blocks[0].input_filters,
        effnetv2_model.round_filters(mconfig.feature_size or 1280,
                                     mconfig))] = name
  return known


def describe_source(source: Source) -> str:
  """The variant a file holds: its stored name, or one inferred from shapes."""
  if source.model_name:
    return source.model_name
  block = (r'^blocks_(\d+)_' if source.naming == PORT else
           r'^block(\d+[a-z])_')
  blocks = {m.group(1) for k in source.shapes for m in [re.match(block, k)]
            if m}
  stem = [s for k, s in source.shapes.items() if k.startswith('stem_conv/')]
  head_layer = 'head_conv/' if source.naming == PORT else 'top_conv/'
  head = [s for k, s in source.shapes.items() if k.startswith(head_layer)]
  if not (stem and head):
    return 'an unknown model'
  fingerprint = _fingerprint(len(blocks), stem[0][-1], head[0][-1])
  return _known_fingerprints().get(
      fingerprint, f'an EfficientNet with {len(blocks)} blocks, '
      f'{stem[0][-1]} stem and {head[0][-1]} head filters')


def _refusal(model, source: Source, plan: Plan) -> Optional[str]:
  problems = []
  if plan.mismatched:
    problems.append(f'{len(plan.mismatched)} shapes differ (first: '
                    f'{"; ".join(plan.mismatched[:3])})')
  if plan.missing:
    problems.append(f'{len(plan.missing)} model variables are not in the '
                    f'file (first: {"; ".join(plan.missing[:3])})')
  if plan.unused:
    problems.append(f'{len(plan.unused)} file variables have no place in '
                    f'the model (first: {"; ".join(plan.unused[:3])})')
  if not problems:
    return None
  return (f'{source.path} ({source.kind}, {describe_source(source)}) does '
          f'not fit this run\'s model {model.name} '
          f'({model.count_params():,} parameters): '
          f'{"; ".join(problems)}. Use weights of this variant, or the '
          '--model_name (and model.* overrides) the weights were made with')


# -- loading -------------------------------------------------------------------
def load_pretrained(model, path: str, use_ema: bool = True) -> List[str]:
  """Loads `path` into `model` or raises PretrainedError; returns a summary.

  The summary's first line says what was loaded; the others name each
  skipped variable group and why.
  """
  source = read_weights(path)
  plan = plan_loading(model, source, use_ema)
  refusal = _refusal(model, source, plan)
  if refusal:
    raise PretrainedError(refusal)
  # Everything is read before anything is assigned: a damaged file leaves
  # the model untouched.
  values = [source.tensors[key]() for _, key in plan.assign]
  for (variable, _), value in zip(plan.assign, values):
    variable.assign(np.asarray(value, dtype=variable.dtype))
  ema_note = (f', {plan.from_ema} from EMA shadows'
              if source.naming == UPSTREAM else '')
  summary = [f'initialized {model.name} from {path} ({source.kind}, '
             f'{describe_source(source)}): {len(plan.assign)} variables'
             f'{ema_note}']
  summary += [f'skipped {note}' for note in plan.skipped]
  return summary
