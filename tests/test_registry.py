"""Wrong names get one error format everywhere: closest matches, then all."""
import copy
import re

import pytest

from automl_effnetv2 import augment_spec
from automl_effnetv2 import autoaugment
from automl_effnetv2 import datasets
from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import hparams
from automl_effnetv2 import progressive
from automl_effnetv2 import registry
from automl_effnetv2 import train_lib
from automl_effnetv2 import utils


def test_message_suggests_the_closest_names_ignoring_case_and_lists_all():
  message = registry.unknown_name_message(
      'op', 'rotat', ['Rotate', 'Invert', 'ShearX'])
  assert message == ("unknown op 'rotat'; did you mean Rotate? "
                     '(valid: Rotate, Invert, ShearX)')
  far = registry.unknown_name_message('op', 'zzz', ['Rotate'])
  assert far == "unknown op 'zzz' (valid: Rotate)"


def test_check_name_returns_a_valid_name_and_raises_the_given_error():
  assert registry.check_name('mode', 'b', ('a', 'b')) == 'b'
  with pytest.raises(KeyError, match="unknown mode 'c'"):
    registry.check_name('mode', 'c', ('a', 'b'), KeyError)
  assert registry.lookup('unit', 'm', {'m': 1, 'km': 1000}) == 1


def test_registry_decorator_names_ignore_case():
  table = registry.Registry('config', hparams.ConfigError)

  @table.register
  class FirstConfig:  # pylint: disable=unused-variable
    pass

  @table.register(name='second_config')
  class Other:  # pylint: disable=unused-variable
    pass

  assert table.get('FIRSTCONFIG') is FirstConfig
  assert table.get('Second_Config') is Other
  assert table.names() == ['firstconfig', 'second_config']
  with pytest.raises(hparams.ConfigError, match='did you mean firstconfig'):
    table.get('FirstConfg')


def _schedule(name):
  utils.learning_rate_at(0, initial_lr=1.0, steps_per_epoch=1, total_steps=2,
                         lr_decay_type=name)


# (what the user names, a typo, the name it should suggest)
USER_LOOKUPS = [
    (datasets.get_dataset_class, 'fashion_mnst', 'fashion_mnist'),
    (datasets.get_dataset_config, 'Cifar10Fy', 'cifar10ft'),
    (effnetv2_configs.get_model_config, 'efficientnetv2-ss',
     'efficientnetv2-s'),
    (lambda name: copy.deepcopy(hparams.base_config).override(f'{name}=1'),
     'train.bach_size', 'train.batch_size'),
    (lambda name: datasets.FashionMNISTInput(True, 32, split=name), 'trian',
     'train'),
    (utils.build_optimizer, 'rmsprp', 'rmsprop'),
    (utils.get_act_fn, 'silo', 'silu'),
    (_schedule, 'cosin', 'cosine'),
    (lambda name: utils.precision_policy(name, 'GPU'), 'mixed_float61',
     'mixed_float16'),
    (progressive.check_ablation, 'no_progresive', 'no_progressive'),
    (train_lib.build_strategy, 'mirored', 'mirrored'),
    (lambda name: augment_spec.AugmentSpec(ops=[name]), 'Rotat', 'Rotate'),
    (lambda name: augment_spec.AugmentSpec(policy=name), 'randaugg',
     'randaug'),
    (lambda name: autoaugment.make_op(name, 5, 100, 40), 'Posterise',
     'Posterize'),
]


@pytest.mark.parametrize('select,typo,suggestion', USER_LOOKUPS,
                         ids=[typo for _, typo, _ in USER_LOOKUPS])
def test_every_user_facing_lookup_names_the_closest_valid_name(
    select, typo, suggestion):
  with pytest.raises(ValueError) as err:  # Each site's error type is one.
    select(typo)
  message = str(err.value)
  pattern = (rf"^unknown .*{re.escape(repr(typo))}; did you mean "
             rf'.*\b{re.escape(suggestion)}\b.*\? \(valid: .*'
             rf'\b{re.escape(suggestion)}\b')
  assert re.search(pattern, message), message
