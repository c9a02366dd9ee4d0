"""EfficientNet V1 and V2 architectures as data: block strings and variants.

A block string such as `r4_k3_s2_e4_i24_o48_c1` packs one stage's arguments:
r repeats, k kernel size, s stride, e expand ratio, i/o input/output filters,
se squeeze-excite ratio (optional), c1 fused MBConv (absent or c0: MBConv).
The numbers are upstream's (effnetv2_configs.py at google/automl a6bb1ff).
"""
import dataclasses
import re
from typing import List, Optional

from automl_effnetv2 import hparams
from automl_effnetv2 import registry


@dataclasses.dataclass(frozen=True)
class BlockArgs:
  """Arguments of one stage of blocks."""
  num_repeat: int
  kernel_size: int
  strides: int
  expand_ratio: int
  input_filters: int
  output_filters: int
  se_ratio: Optional[float] = None
  conv_type: int = 0  # 0: MBConv, 1: fused MBConv.

  @property
  def fused(self) -> bool:
    return self.conv_type == 1

  @property
  def has_se(self) -> bool:
    return self.se_ratio is not None and 0 < self.se_ratio <= 1


_TOKEN = re.compile(r'^(se|[rksceio])(\d+(?:\.\d+)?)$')
_REQUIRED = ('r', 'k', 's', 'e', 'i', 'o')


def decode_block_string(block_string: str) -> BlockArgs:
  """Parses `r2_k3_s1_e1_i24_o24_c1` into `BlockArgs`."""
  options = {}
  for token in block_string.split('_'):
    match = _TOKEN.match(token)
    if not match:
      raise ValueError(
          f'bad token {token!r} in block string {block_string!r}: expected '
          'r<repeats>_k<kernel>_s<stride>_e<expand>_i<in>_o<out>'
          '[_se<ratio>][_c<0|1>]')
    key, value = match.groups()
    if key in options:
      raise ValueError(f'{key!r} appears twice in block string '
                       f'{block_string!r}')
    options[key] = value
  missing = [k for k in _REQUIRED if k not in options]
  if missing:
    raise ValueError(f'block string {block_string!r} lacks {missing}')
  conv_type = int(options.get('c', 0))
  if conv_type not in (0, 1):
    raise ValueError(f'block string {block_string!r}: c must be 0 or 1')
  return BlockArgs(
      num_repeat=int(options['r']),
      kernel_size=int(options['k']),
      strides=int(options['s']),
      expand_ratio=int(options['e']),
      input_filters=int(options['i']),
      output_filters=int(options['o']),
      se_ratio=float(options['se']) if 'se' in options else None,
      conv_type=conv_type)


def encode_block_string(block: BlockArgs) -> str:
  """Inverse of `decode_block_string` for upstream's spelling."""
  parts = [
      f'r{block.num_repeat}', f'k{block.kernel_size}', f's{block.strides}',
      f'e{block.expand_ratio}', f'i{block.input_filters}',
      f'o{block.output_filters}'
  ]
  if block.se_ratio is not None:
    parts.append(f'se{block.se_ratio:g}')
  if block.conv_type:
    parts.append(f'c{block.conv_type}')
  return '_'.join(parts)


def decode(block_strings: List[str]) -> List[BlockArgs]:
  if isinstance(block_strings, str) or not block_strings:
    raise ValueError(f'expected a non-empty list of block strings, got '
                     f'{block_strings!r}')
  return [decode_block_string(s) for s in block_strings]


# -- EfficientNet V1 --------------------------------------------------------
V1_B0_BLOCKS = [
    'r1_k3_s1_e1_i32_o16_se0.25',
    'r2_k3_s2_e6_i16_o24_se0.25',
    'r2_k5_s2_e6_i24_o40_se0.25',
    'r3_k3_s2_e6_i40_o80_se0.25',
    'r3_k5_s1_e6_i80_o112_se0.25',
    'r4_k5_s2_e6_i112_o192_se0.25',
    'r1_k3_s1_e6_i192_o320_se0.25',
]

# name: (width, depth, eval image size, dropout)
EFFICIENTNET_V1_PARAMS = {
    'efficientnet-b0': (1.0, 1.0, 224, 0.2),
    'efficientnet-b1': (1.0, 1.1, 240, 0.2),
    'efficientnet-b2': (1.1, 1.2, 260, 0.3),
    'efficientnet-b3': (1.2, 1.4, 300, 0.3),
    'efficientnet-b4': (1.4, 1.8, 380, 0.4),
    'efficientnet-b5': (1.6, 2.2, 456, 0.4),
    'efficientnet-b6': (1.8, 2.6, 528, 0.5),
    'efficientnet-b7': (2.0, 3.1, 600, 0.5),
    'efficientnet-b8': (2.2, 3.6, 672, 0.5),
    'efficientnet-l2': (4.3, 5.3, 800, 0.5),
}

# -- EfficientNet V2 --------------------------------------------------------
V2_BASE_BLOCKS = [
    'r1_k3_s1_e1_i32_o16_c1',
    'r2_k3_s2_e4_i16_o32_c1',
    'r2_k3_s2_e4_i32_o48_c1',
    'r3_k3_s2_e4_i48_o96_se0.25',
    'r5_k3_s1_e6_i96_o112_se0.25',
    'r8_k3_s2_e6_i112_o192_se0.25',
]
V2_S_BLOCKS = [
    'r2_k3_s1_e1_i24_o24_c1',
    'r4_k3_s2_e4_i24_o48_c1',
    'r4_k3_s2_e4_i48_o64_c1',
    'r6_k3_s2_e4_i64_o128_se0.25',
    'r9_k3_s1_e6_i128_o160_se0.25',
    'r15_k3_s2_e6_i160_o256_se0.25',
]
V2_M_BLOCKS = [
    'r3_k3_s1_e1_i24_o24_c1',
    'r5_k3_s2_e4_i24_o48_c1',
    'r5_k3_s2_e4_i48_o80_c1',
    'r7_k3_s2_e4_i80_o160_se0.25',
    'r14_k3_s1_e6_i160_o176_se0.25',
    'r18_k3_s2_e6_i176_o304_se0.25',
    'r5_k3_s1_e6_i304_o512_se0.25',
]
V2_L_BLOCKS = [
    'r4_k3_s1_e1_i32_o32_c1',
    'r7_k3_s2_e4_i32_o64_c1',
    'r7_k3_s2_e4_i64_o96_c1',
    'r10_k3_s2_e4_i96_o192_se0.25',
    'r19_k3_s1_e6_i192_o224_se0.25',
    'r25_k3_s2_e6_i224_o384_se0.25',
    'r7_k3_s1_e6_i384_o640_se0.25',
]
V2_XL_BLOCKS = [
    'r4_k3_s1_e1_i32_o32_c1',
    'r8_k3_s2_e4_i32_o64_c1',
    'r8_k3_s2_e4_i64_o96_c1',
    'r16_k3_s2_e4_i96_o192_se0.25',
    'r24_k3_s1_e6_i192_o256_se0.25',
    'r32_k3_s2_e6_i256_o512_se0.25',
    'r8_k3_s1_e6_i512_o640_se0.25',
]

# name: (blocks, width, depth, train size, eval size, dropout, RandAugment
#        magnitude, mixup/cutmix alpha, augname)
EFFICIENTNET_V2_PARAMS = {
    'efficientnetv2-s': (V2_S_BLOCKS, 1.0, 1.0, 300, 384, 0.2, 10, 0,
                         'randaug'),
    'efficientnetv2-m': (V2_M_BLOCKS, 1.0, 1.0, 384, 480, 0.3, 15, 0.2,
                         'randaug'),
    'efficientnetv2-l': (V2_L_BLOCKS, 1.0, 1.0, 384, 480, 0.4, 20, 0.5,
                         'randaug'),
    'efficientnetv2-xl': (V2_XL_BLOCKS, 1.0, 1.0, 384, 512, 0.4, 20, 0.5,
                          'randaug'),
    'efficientnetv2-b0': (V2_BASE_BLOCKS, 1.0, 1.0, 192, 224, 0.2, 0, 0,
                          'effnetv1_autoaug'),
    'efficientnetv2-b1': (V2_BASE_BLOCKS, 1.0, 1.1, 192, 240, 0.2, 0, 0,
                          'effnetv1_autoaug'),
    'efficientnetv2-b2': (V2_BASE_BLOCKS, 1.1, 1.2, 208, 260, 0.3, 0, 0,
                          'effnetv1_autoaug'),
    'efficientnetv2-b3': (V2_BASE_BLOCKS, 1.2, 1.4, 240, 300, 0.3, 0, 0,
                          'effnetv1_autoaug'),
}


def model_names() -> List[str]:
  return sorted(EFFICIENTNET_V2_PARAMS) + sorted(EFFICIENTNET_V1_PARAMS)


def efficientnetv1_config(model_name: str) -> hparams.Config:
  width, depth, isize, dropout = EFFICIENTNET_V1_PARAMS[model_name]
  return hparams.Config(
      model=dict(
          model_name=model_name,
          blocks_args=list(V1_B0_BLOCKS),
          width_coefficient=width,
          depth_coefficient=depth,
          dropout_rate=dropout,
      ),
      eval=dict(isize=isize),
      train=dict(isize=0.8),  # a ratio: 80% of the eval size.
      data=dict(augname='effnetv1_autoaug'),
  )


def efficientnetv2_config(model_name: str) -> hparams.Config:
  (blocks, width, depth, train_size, eval_size, dropout, ram, mix,
   augname) = EFFICIENTNET_V2_PARAMS[model_name]
  return hparams.Config(
      model=dict(
          model_name=model_name,
          blocks_args=list(blocks),
          width_coefficient=width,
          depth_coefficient=depth,
          dropout_rate=dropout,
      ),
      train=dict(isize=train_size, stages=4, sched=True),
      eval=dict(isize=eval_size),
      data=dict(augname=augname, ram=ram, mixup_alpha=mix, cutmix_alpha=mix),
  )


def get_model_config(model_name: str) -> hparams.Config:
  """The config fragment for one named variant; unknown names list the valid."""
  if model_name in EFFICIENTNET_V2_PARAMS:
    return efficientnetv2_config(model_name)
  if model_name in EFFICIENTNET_V1_PARAMS:
    return efficientnetv1_config(model_name)
  raise hparams.ConfigError(
      registry.unknown_name_message('model_name', model_name, model_names()))
