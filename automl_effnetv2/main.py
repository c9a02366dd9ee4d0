r"""Trains and evaluates EfficientNetV2 (upstream main.py, on TF2 / Keras 3).

  cd automl_effnetv2
  python main.py --mode=train --dataset_cfg=fashion_mnist --model_dir=/tmp/fm
  python main.py --mode=eval --dataset_cfg=fashion_mnist --model_dir=/tmp/fm

Or `python -m automl_effnetv2.main ...` from the repository root.

The config is assembled in upstream's order: base, model (--model_name),
dataset (--dataset_cfg), --hparam_str, --sweeps; it is saved as
model_dir/config.yaml. Running the same command again resumes training.
"""
import copy
import os
import signal
import sys

if __package__ in (None, ''):  # `python main.py` from inside the package.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging

from automl_effnetv2 import datasets
from automl_effnetv2 import effnetv2_configs
from automl_effnetv2 import hparams
from automl_effnetv2 import local_data
from automl_effnetv2 import progressive
from automl_effnetv2 import train_lib

MODES = ('train', 'eval', 'traineval')

FLAGS = flags.FLAGS
flags.DEFINE_string('model_name', 'efficientnetv2-b0', 'Model name.')
flags.DEFINE_string('dataset_cfg', 'Imagenet', 'Dataset training config name '
                    '(case-insensitive), e.g. ImageNet, cifar10ft.')
flags.DEFINE_string('hparam_str', '', "Overrides: 'a.b=1,c.d=x' or a .yaml "
                    'file path.')
flags.DEFINE_string('sweeps', '', 'Overrides applied after hparam_str (same '
                    'syntax), as upstream.')
flags.DEFINE_bool('use_tpu', False, 'Train on a TPU (sets the strategy).')
flags.DEFINE_string('tpu', None, 'TPU name or grpc:// address.')
flags.DEFINE_string('tpu_job_name', None, 'Unused (TPUEstimator only); kept '
                    'for command-line compatibility.')
flags.DEFINE_string('gcp_project', None, 'Unused; kept for compatibility.')
flags.DEFINE_string('tpu_zone', None, 'Unused; kept for compatibility.')
flags.DEFINE_string('data_dir', None, 'Dataset location: TFRecord folder '
                    '(imagenet), tfds data dir, or the Fashion-MNIST IDX '
                    'folder.')
flags.DEFINE_string('eval_name', None, 'Name of this evaluation in '
                    'metrics.json.')
flags.DEFINE_bool('archive_ckpt', True, 'Keep the best checkpoint in '
                  'model_dir/archive.')
flags.DEFINE_string('model_dir', None, 'Checkpoints, config and summaries.')
flags.DEFINE_enum('mode', 'train', MODES, 'train: train (then evaluate once); '
                  'eval: evaluate the latest checkpoint; traineval: evaluate '
                  'after every stage.')
flags.DEFINE_bool('export_to_tpu', False, 'Unused; kept for compatibility.')
flags.DEFINE_enum('ablation', None, progressive.ABLATIONS, 'Progressive '
                  'learning ablation (default: train.ablation of the config, '
                  'none): none; no_progressive (final size and '
                  'final regularization from the first step); '
                  'fixed_image_size; fixed_regularization; '
                  'constant_weight_decay (train.weight_decay_inc = 0).')
flags.DEFINE_enum('strategy', None, train_lib.STRATEGIES, 'tf.distribute '
                  'strategy (default: runtime.strategy of the config).')


def build_config(model_name: str, dataset_cfg: str, hparam_str: str = '',
                 sweeps: str = '', ablation=None) -> hparams.Config:
  """Upstream's override order: base -> model -> dataset -> flags."""
  config = copy.deepcopy(hparams.base_config)
  config.override(effnetv2_configs.get_model_config(model_name))
  config.override(datasets.get_dataset_config(dataset_cfg))
  warn_ignored_keys(config, hparam_str, sweeps)
  config.override(hparam_str)
  config.override(sweeps)
  config.model.num_classes = config.data.num_classes
  # --ablation wins over a train.ablation set in hparam_str / a YAML file.
  progressive.ablate_config(config, ablation or config.train.ablation)
  return config


def warn_ignored_keys(preset: hparams.Config, *overrides) -> list:
  """Logs one line naming the upstream keys the overrides set that this port
  ignores (hparams.IGNORED_UPSTREAM_KEYS); returns them."""
  config = copy.deepcopy(preset)
  for override in overrides:
    config.override(override)
  ignored = hparams.ignored_keys_set(config, preset)
  if ignored:
    logging.warning('ignored: %s (upstream keys this port does not use; see '
                    'hparams.IGNORED_UPSTREAM_KEYS)', ', '.join(ignored))
  return ignored


def run(mode: str, config: hparams.Config, model_dir: str,
        data_dir=None, strategy=None, archive_ckpt=True, eval_name=None):
  """Runs one mode; returns the last metrics."""
  trainer = train_lib.Trainer(config, model_dir, strategy=strategy,
                              data_dir=data_dir)
  trainer.archive_ckpt = archive_ckpt
  trainer.eval_name = eval_name
  if mode == 'eval':
    if not trainer.manager.latest_checkpoint:
      raise train_lib.TrainingError(
          f'no checkpoint in {model_dir} to evaluate; train first '
          '(--mode=train)')
    trainer.check_saved_config()
    trainer.restore()
    return trainer.evaluate_and_record()
  result = trainer.train(eval_every_stage=(mode == 'traineval'))
  if mode == 'train':
    result.update(trainer.evaluate_and_record())
  trainer.export_weights()
  return result


def main(argv):
  del argv
  if not FLAGS.model_dir:
    raise app.UsageError('--model_dir is required (checkpoints, config.yaml '
                         'and metrics.json go there)')
  try:
    config = build_config(FLAGS.model_name, FLAGS.dataset_cfg,
                          FLAGS.hparam_str, FLAGS.sweeps, FLAGS.ablation)
  except (hparams.ConfigError, datasets.DatasetError, ValueError) as e:
    raise app.UsageError(str(e)) from e
  if FLAGS.use_tpu or FLAGS.tpu:
    config.runtime.strategy = 'tpu'
    config.runtime.tpu = FLAGS.tpu
  if FLAGS.strategy:
    config.runtime.strategy = FLAGS.strategy
  logging.info('config:\n%s', config)
  try:
    result = run(FLAGS.mode, config, FLAGS.model_dir, FLAGS.data_dir,
                 archive_ckpt=FLAGS.archive_ckpt, eval_name=FLAGS.eval_name)
  except (train_lib.TrainingError, datasets.DatasetError,
          local_data.DataFilesError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt as e:
    # In training the trainer has saved a checkpoint and said so (elsewhere
    # there is nothing to save); a traceback would only bury that line.
    # Exit with the status of a process killed by the signal.
    sys.exit(128 + getattr(e, 'signum', signal.SIGINT))
  print('final:', {k: v for k, v in result.items() if not isinstance(v, dict)})


if __name__ == '__main__':
  app.run(main)
