"""Block-string codec and the variant table."""
import pytest

from automl_effnetv2 import effnetv2_configs as configs
from automl_effnetv2 import hparams

ALL_BLOCK_STRINGS = (configs.V1_B0_BLOCKS + configs.V2_BASE_BLOCKS +
                     configs.V2_S_BLOCKS + configs.V2_M_BLOCKS +
                     configs.V2_L_BLOCKS + configs.V2_XL_BLOCKS)


@pytest.mark.parametrize('block_string', ALL_BLOCK_STRINGS)
def test_encode_decode_round_trip(block_string):
  assert configs.encode_block_string(
      configs.decode_block_string(block_string)) == block_string


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


def test_v2_s_row_matches_upstream():
  cfg = configs.get_model_config('efficientnetv2-s')
  assert cfg.model.blocks_args == configs.V2_S_BLOCKS
  assert (cfg.train.isize, cfg.eval.isize, cfg.model.dropout_rate) == (
      300, 384, 0.2)
  assert (cfg.data.ram, cfg.data.mixup_alpha, cfg.data.augname) == (
      10, 0, 'randaug')
  assert cfg.train.stages == 4 and cfg.train.sched is True


@pytest.mark.parametrize('name,row', [
    ('efficientnetv2-m', (1.0, 1.0, 384, 480, 0.3, 15, 0.2)),
    ('efficientnetv2-l', (1.0, 1.0, 384, 480, 0.4, 20, 0.5)),
    ('efficientnetv2-xl', (1.0, 1.0, 384, 512, 0.4, 20, 0.5)),
    ('efficientnetv2-b0', (1.0, 1.0, 192, 224, 0.2, 0, 0)),
    ('efficientnetv2-b1', (1.0, 1.1, 192, 240, 0.2, 0, 0)),
    ('efficientnetv2-b2', (1.1, 1.2, 208, 260, 0.3, 0, 0)),
    ('efficientnetv2-b3', (1.2, 1.4, 240, 300, 0.3, 0, 0)),
])
def test_variant_rows(name, row):
  cfg = configs.get_model_config(name)
  assert (cfg.model.width_coefficient, cfg.model.depth_coefficient,
          cfg.train.isize, cfg.eval.isize, cfg.model.dropout_rate,
          cfg.data.ram, cfg.data.cutmix_alpha) == row


def test_v1_variants_train_at_a_ratio_of_eval_size():
  cfg = configs.get_model_config('efficientnet-b4')
  assert cfg.train.isize == 0.8 and cfg.eval.isize == 380
  assert cfg.model.width_coefficient == 1.4


def test_unknown_model_name_lists_valid_names():
  with pytest.raises(hparams.ConfigError) as err:
    configs.get_model_config('efficientnetv2-xs')
  assert 'efficientnetv2-s' in str(err.value)
  assert 'efficientnet-b7' in str(err.value)
