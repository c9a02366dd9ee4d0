"""The per-image augmentation of a run, as one checked value.

`data.augname` and the settings that go with it (RandAugment's layers and
magnitude, its op list, the translate/cutout pixel constants, the fill colour,
Solarize's wrap, the Contrast and Sharpness pixels) are read from the config
and checked in one place, `AugmentSpec.from_config`, and travel whole from
there to the pipeline. A progressive-learning stage changes only the
magnitude (`at_magnitude`).

The names are upstream's `augname` values, decoded here once:

  None (or '')                 crop, resize and flip only
  randaug | autoaug | ra_aa    RandAugment, AutoAugment, or one of the two
                               per image with probability 1/2
  ft*                          the fine-tuning path ([-1, 1] scaling, no
                               crop), with AutoAugment and/or RandAugment
                               where the name contains 'autoaug' /
                               'randaug', and noise cutout for bare 'ft' or
                               a name containing 'cutout' ('ft_flip': flip
                               only)
  effnetv1_[randaug|autoaug|ra_aa]
                               EfficientNet V1's preprocessing, with the
                               policy after the prefix (none when empty)

Upstream found a misspelt default or V1 name only when the pipeline was
traced; here it is refused when the spec is built. 'ft' names are read as
upstream reads them, by the parts they contain.
"""
import dataclasses
import math
from typing import Optional, Tuple

from automl_effnetv2 import autoaugment
from automl_effnetv2 import hparams
from automl_effnetv2 import registry

# The policies autoaugment.distort_image applies to a uint8 image.
IMAGE_POLICIES = ('randaug', 'autoaug', 'ra_aa')
FINETUNE_PREFIX = 'ft'
LEGACY_PREFIX = 'effnetv1_'
# For error messages: the names a user is most likely to have meant.
KNOWN_NAMES = (IMAGE_POLICIES + ('ft', 'ft_randaug', 'ft_autoaug', 'ft_cutout',
                                 'ft_randaug_cutout') +
               tuple(LEGACY_PREFIX + p for p in IMAGE_POLICIES))

# Spec field -> the `data.*` config key it is read from.
CONFIG_KEYS = {
    'policy': 'augname',
    'num_layers': 'ra_num_layers',
    'magnitude': 'ram',
    'ops': 'ra_ops',
    'translate_const': 'translate_const',
    'cutout_const': 'cutout_const',
    'fill': 'aug_fill',
    'solarize_wrap': 'solarize_wrap',
    'enhance_pixels': 'enhance_pixels',
}


def _is_number(value) -> bool:
  return hparams.is_number(value) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """What happens to each training image besides crop, resize and flip.

  Fields (config key in brackets):
    policy [data.augname]: see the module docstring; None: no augmentation.
    num_layers [data.ra_num_layers]: RandAugment's N, ops per image.
    magnitude [data.ram]: RandAugment's M on upstream's 0-10 level scale.
    ops [data.ra_ops]: RandAugment's op names (a name or a sequence of them;
      upstream's 16 by default). Port addition.
    translate_const, cutout_const [data.*]: translate and cutout pixel
      constants; None keeps the policy's own (RandAugment 100/40,
      AutoAugment 250/100). Port addition.
    fill [data.aug_fill]: the pixel value geometric ops and cutout leave
      behind; None: upstream's gray 128. Port addition.
    solarize_wrap [data.solarize_wrap]: Solarize's threshold wraps modulo
      256 as upstream's does (autoaugment.solarize_threshold).
    enhance_pixels [data.enhance_pixels]: 'pil' (Contrast and Sharpness as
      PIL computes them) or 'upstream' (upstream's pixels for both;
      autoaugment.contrast, autoaugment.sharpness). Port addition.
  """
  policy: Optional[str] = None
  num_layers: int = 2
  magnitude: float = 15
  ops: Tuple[str, ...] = autoaugment.RANDAUGMENT_OPS
  translate_const: Optional[float] = None
  cutout_const: Optional[float] = None
  fill: Optional[int] = None
  solarize_wrap: bool = True
  enhance_pixels: str = 'pil'

  def __post_init__(self):
    # Normal forms, so that equal settings give equal specs.
    set_field = lambda name, value: object.__setattr__(self, name, value)
    set_field('policy', self.policy or None)
    ops = self.ops
    if ops is None:
      ops = autoaugment.RANDAUGMENT_OPS
    set_field('ops', (ops,) if isinstance(ops, str) else tuple(ops))
    self._check()

  @classmethod
  def from_config(cls, data: hparams.Config) -> 'AugmentSpec':
    """The spec of a run's `data` config; keys it lacks (a run folder saved
    before the key existed) keep the defaults."""
    defaults = cls()
    return cls(**{field: data.get(key, getattr(defaults, field))
                  for field, key in CONFIG_KEYS.items()})

  def at_magnitude(self, magnitude: float) -> 'AugmentSpec':
    """The same augmentation at a stage's RandAugment magnitude."""
    return dataclasses.replace(self, magnitude=magnitude)

  # -- the decoded policy ---------------------------------------------------
  @property
  def family(self) -> str:
    """The preprocessing path: 'default', 'finetune' or 'legacy'."""
    if self.policy and self.policy.startswith(LEGACY_PREFIX):
      return 'legacy'
    if self.policy and self.policy.startswith(FINETUNE_PREFIX):
      return 'finetune'
    return 'default'

  @property
  def image_policies(self) -> Tuple[str, ...]:
    """The `IMAGE_POLICIES` applied to each training image, in order."""
    if self.family == 'legacy':
      inner = self.policy[len(LEGACY_PREFIX):]
      return (inner,) if inner else ()
    if self.family == 'finetune':
      # Upstream tests for each name inside the string, AutoAugment first.
      return tuple(p for p in ('autoaug', 'randaug') if p in self.policy)
    return (self.policy,) if self.policy else ()

  @property
  def finetune_cutout(self) -> bool:
    """The fine-tuning path's noise cutout: bare 'ft' or a '_cutout' part."""
    return self.family == 'finetune' and (
        self.policy == FINETUNE_PREFIX or 'cutout' in self.policy)

  @property
  def fill_color(self) -> Tuple[int, int, int]:
    """The uint8 RGB colour uncovered pixels get."""
    if self.fill is None:
      return autoaugment.REPLACE_GRAY
    return (int(self.fill),) * 3

  def constants(self, policy: str) -> Tuple[float, float]:
    """(translate, cutout) pixel constants for 'randaug' or 'autoaug'."""
    defaults = (autoaugment.AUTOAUGMENT_CONSTS if policy == 'autoaug' else
                autoaugment.RANDAUGMENT_CONSTS)
    return (defaults[0] if self.translate_const is None
            else self.translate_const,
            defaults[1] if self.cutout_const is None else self.cutout_const)

  # -- checks -----------------------------------------------------------------
  def _fail(self, field: str, expected: str):
    value = getattr(self, field)
    raise hparams.ConfigError(
        f'data.{CONFIG_KEYS[field]}={value!r} is out of range: expected '
        f'{expected}')

  def _check(self):
    self._check_policy()
    if not (_is_number(self.num_layers) and float(self.num_layers).is_integer()
            and self.num_layers >= 0):
      self._fail('num_layers', 'an integer >= 0')
    if not (_is_number(self.magnitude) and self.magnitude >= 0):
      self._fail('magnitude', 'a number >= 0')
    if not self.ops:
      raise hparams.ConfigError(
          "data.ra_ops=() names no RandAugment op; list them with '|', e.g. "
          'data.ra_ops=Rotate|Cutout (None: upstream\'s 16)')
    for name in self.ops:
      registry.check_name('RandAugment op in data.ra_ops', name,
                          autoaugment.VALID_RANDAUGMENT_OPS,
                          hparams.ConfigError)
    for field in ('translate_const', 'cutout_const'):
      value = getattr(self, field)
      if value is not None and not (_is_number(value) and value >= 0):
        self._fail(field, "a number >= 0, or None for the policy's own")
    fill = self.fill
    if fill is not None and not (_is_number(fill) and fill == int(fill)
                                 and 0 <= fill <= 255):
      self._fail('fill', 'a whole pixel value in [0, 255], or None for '
                 'gray 128')
    if not isinstance(self.solarize_wrap, bool):
      self._fail('solarize_wrap', 'true or false')
    if self.enhance_pixels not in autoaugment.ENHANCE_PIXELS:
      self._fail('enhance_pixels', ' or '.join(autoaugment.ENHANCE_PIXELS))

  def _check_policy(self):
    policy = self.policy
    if policy is None:
      return
    if isinstance(policy, str):
      if policy in IMAGE_POLICIES or policy.startswith(FINETUNE_PREFIX):
        return
      if policy.startswith(LEGACY_PREFIX) and policy[len(LEGACY_PREFIX):] in (
          ('',) + IMAGE_POLICIES):
        return
    raise hparams.ConfigError(registry.unknown_name_message(
        'augmentation in data.augname', policy, KNOWN_NAMES + ('None',)))


NO_AUGMENTATION = AugmentSpec()
