"""Block-string codec and the variant table, checked for every model name."""
import pytest

from automl_effnetv2 import effnetv2_configs as configs
from automl_effnetv2 import hparams
from automl_effnetv2 import main
from automl_effnetv2 import progressive

MODEL_NAMES = configs.model_names()


def test_decode_reads_every_field():
  block = configs.decode_block_string('r6_k3_s2_e4_i64_o128_se0.25')
  assert block == configs.BlockArgs(
      num_repeat=6, kernel_size=3, strides=2, expand_ratio=4,
      input_filters=64, output_filters=128, se_ratio=0.25, conv_type=0)
  fused = configs.decode_block_string('r2_k3_s1_e1_i24_o24_c1')
  assert fused.fused and not fused.has_se


@pytest.mark.parametrize('bad', ['r2_k3_s1_e1_i24', 'r2_k3_s1_e1_i24_o24_x9',
                                 'r2_k3_s1_e1_i24_o24_c2', 'r2_r3_k3_s1_e1_i2_o2'])
def test_malformed_block_strings_are_refused(bad):
  with pytest.raises(ValueError):
    configs.decode_block_string(bad)


def test_both_families_are_listed():
  assert any(n.startswith('efficientnetv2-') for n in MODEL_NAMES)
  assert any(n.startswith('efficientnet-') for n in MODEL_NAMES)
  assert len(set(MODEL_NAMES)) == len(MODEL_NAMES)


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_variant_config_assembles_and_names_itself(name):
  # Over the base config with a dataset config, as main.py assembles it:
  # the variant brings no key the base config lacks.
  config = main.build_config(name, 'imagenet')
  assert config.model.model_name == name
  assert config.model.width_coefficient and config.model.depth_coefficient


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_variant_block_strings_round_trip(name):
  for block_string in configs.get_model_config(name).model.blocks_args:
    assert configs.encode_block_string(
        configs.decode_block_string(block_string)) == block_string


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_variant_blocks_chain_their_filters(name):
  blocks = configs.decode(configs.get_model_config(name).model.blocks_args)
  for previous, block in zip(blocks, blocks[1:]):
    assert block.input_filters == previous.output_filters, block


@pytest.mark.parametrize('name', MODEL_NAMES)
def test_variant_trains_at_most_at_its_eval_size(name):
  cfg = configs.get_model_config(name)
  train_size = progressive.train_image_size(cfg.train.isize, cfg.eval.isize)
  assert 0 < train_size <= cfg.eval.isize


def test_unknown_model_name_lists_valid_names():
  with pytest.raises(hparams.ConfigError) as err:
    configs.get_model_config('efficientnetv2-xs')
  assert 'efficientnetv2-s' in str(err.value)
  assert 'efficientnet-b7' in str(err.value)
