"""Which strategy `auto` means, from the machine's facts."""
import pytest

from automl_effnetv2 import strategy_choice


@pytest.mark.parametrize('tpu,tf_config_set,num_gpus,expected', [
    ('my-tpu', True, 8, 'tpu'),  # A named TPU wins over everything.
    (None, True, 0, 'multi_worker_mirrored'),
    # A configured cluster wins over merely present local GPUs.
    (None, True, 4, 'multi_worker_mirrored'),
    (None, False, 2, 'mirrored'),
    (None, False, 1, 'one_device'),
    ('', False, 0, 'one_device'),
])
def test_choice_follows_tpu_then_cluster_then_gpus(tpu, tf_config_set,
                                                   num_gpus, expected):
  assert strategy_choice.choose_strategy(tpu, tf_config_set,
                                         num_gpus) == expected


def test_every_choice_is_a_strategy_the_trainer_builds():
  choices = {strategy_choice.choose_strategy(tpu, cluster, gpus)
             for tpu in (None, 'x') for cluster in (False, True)
             for gpus in range(4)}
  assert choices <= set(strategy_choice.STRATEGIES) - {'auto'}


def test_command_line_reads_tf_config_from_the_environment(monkeypatch,
                                                           capsys):
  monkeypatch.setenv('TF_CONFIG', '{"cluster": {}}')
  strategy_choice.main(['--gpus=2'])
  assert capsys.readouterr().out.strip() == 'multi_worker_mirrored'
  monkeypatch.delenv('TF_CONFIG')
  strategy_choice.main(['--gpus=2'])
  assert capsys.readouterr().out.strip() == 'mirrored'
