"""Config tree: access, copying, override sources and the errors on typos."""
import copy

import pytest

from automl_effnetv2 import hparams


def test_attribute_and_item_access_read_the_same_value():
  cfg = hparams.Config(train=dict(batch_size=64))
  assert cfg.train.batch_size == cfg['train']['batch_size'] == 64


def test_setting_a_value_stores_a_copy():
  source = {'values': [1, 2]}
  cfg = hparams.Config(data=source)
  source['values'].append(3)
  assert cfg.data['values'] == [1, 2]


def test_deepcopy_is_independent():
  cfg = hparams.Config(a=dict(b=1))
  other = copy.deepcopy(cfg)
  other.a.b = 2
  assert cfg.a.b == 1


def test_override_from_string_parses_types_and_lists():
  cfg = hparams.Config(train=dict(batch_size=1, lr=0.1, name='x', flag=False,
                                  sizes=None))
  cfg.override('train.batch_size=64,train.lr=1e-3,train.name=cosine,'
               'train.flag=true,train.sizes=1|2')
  assert cfg.train.as_dict() == {'batch_size': 64, 'lr': 1e-3,
                                 'name': 'cosine', 'flag': True,
                                 'sizes': [1, 2]}


def test_override_from_yaml_file(tmp_path):
  path = tmp_path / 'exp.yaml'
  path.write_text('train:\n  batch_size: 32\ndata:\n  ram: 7\n')
  cfg = copy.deepcopy(hparams.base_config)
  cfg.override(str(path))
  assert cfg.train.batch_size == 32 and cfg.data.ram == 7


def test_yaml_with_python_objects_is_refused(tmp_path):
  path = tmp_path / 'evil.yaml'
  path.write_text('train: !!python/object/apply:os.system ["echo hi"]\n')
  with pytest.raises(hparams.ConfigError, match='not valid YAML'):
    copy.deepcopy(hparams.base_config).override(str(path))


def test_typo_in_key_names_the_key_and_closest_match():
  cfg = copy.deepcopy(hparams.base_config)
  with pytest.raises(hparams.ConfigError) as err:
    cfg.override('train.bach_size=64')
  message = str(err.value)
  assert "'train.bach_size'" in message
  assert 'train.batch_size' in message
  assert cfg.train.batch_size == 4096  # Nothing was half-applied.


def test_unknown_top_level_section_is_refused():
  with pytest.raises(hparams.ConfigError, match="unknown config key 'trian'"):
    copy.deepcopy(hparams.base_config).override({'trian': {'epochs': 1}})


@pytest.mark.parametrize('bad', ['train.batch_size', 'train.batch_size=1=2',
                                 '=3', 'train..x=1', 'just_words'])
def test_malformed_hparam_strings_are_refused(bad):
  with pytest.raises(hparams.ConfigError):
    copy.deepcopy(hparams.base_config).override(bad)


def test_word_for_a_number_is_refused():
  with pytest.raises(hparams.ConfigError, match='takes a number'):
    copy.deepcopy(hparams.base_config).override('train.batch_size=abc')


def test_word_for_a_switch_is_refused():
  config = copy.deepcopy(hparams.base_config)
  with pytest.raises(hparams.ConfigError,
                     match="'train.restart_input_each_stage' takes true or "
                     "false, got 'maybe'"):
    config.override('train.restart_input_each_stage=maybe')
  config.override('train.restart_input_each_stage=true')
  assert config.train.restart_input_each_stage is True
  # runtime.mixed_precision is a switch that also names a Keras policy.
  config.override('runtime.mixed_precision=mixed_bfloat16')
  assert config.runtime.mixed_precision == 'mixed_bfloat16'


def test_replacing_a_group_by_a_scalar_is_refused():
  with pytest.raises(hparams.ConfigError, match='group of settings'):
    copy.deepcopy(hparams.base_config).override('train=3')


def test_update_adds_keys_but_override_does_not():
  cfg = hparams.Config(a=dict(b=1))
  cfg.update({'a': {'c': 2}})
  assert cfg.a.c == 2
  with pytest.raises(hparams.ConfigError):
    cfg.override({'a': {'d': 3}})


def test_yaml_round_trip(tmp_path):
  cfg = copy.deepcopy(hparams.base_config)
  cfg.override('train.batch_size=8,data.augname=ft')
  path = tmp_path / 'config.yaml'
  cfg.save_to_yaml(str(path))
  assert hparams.Config.from_yaml(str(path)) == cfg


def test_registry_lookup_ignores_case_and_lists_names_on_error():
  @hparams.register
  class SomeTestConfig:  # pylint: disable=unused-variable
    pass

  assert hparams.lookup('SOMETESTCONFIG') is SomeTestConfig
  with pytest.raises(hparams.ConfigError, match='sometestconfig'):
    hparams.lookup('sometestconfg')

