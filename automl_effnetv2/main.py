r"""Trains and evaluates EfficientNetV2 (upstream main.py, on TF2 / Keras 3).

  cd automl_effnetv2
  python main.py --mode=train --dataset_cfg=fashion_mnist
  python main.py --mode=eval --dataset_cfg=fashion_mnist

Or `python -m automl_effnetv2.main ...` from the repository root.

The config is assembled in upstream's order: base, model (--model_name),
dataset (--dataset_cfg), --hparam_str, --sweeps; it is saved as
model_dir/config.yaml. --model_dir defaults to
runs/<model_name>_<dataset_cfg> under the current directory. Running the same
command again resumes training.
"""
import errno
import os
import shlex
import signal
import sys

if __package__ in (None, ''):  # `python main.py` from inside the package.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from automl_effnetv2 import tf_import
tf_import.quietly()  # Before anything imports TensorFlow.

from absl import app
from absl import flags
from absl import logging

from automl_effnetv2 import cli
from automl_effnetv2 import divergence
from automl_effnetv2 import export
from automl_effnetv2 import hparams
from automl_effnetv2 import progressive
from automl_effnetv2 import reporting
from automl_effnetv2 import resume
from automl_effnetv2 import run_dir
from automl_effnetv2 import train_errors
from automl_effnetv2 import train_lib
from automl_effnetv2.run_config import build_config  # pylint: disable=unused-import

MODES = ('train', 'eval', 'traineval', 'export')

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
flags.DEFINE_string('model_dir', None, 'Checkpoints, config and summaries '
                    '(default: runs/<model_name>_<dataset_cfg> in the current '
                    'directory, plus _<ablation> for an ablation).')
flags.DEFINE_string('resume_from', None, 'Resume training from this '
                    'checkpoint of model_dir (e.g. ckpt-1500) with changed '
                    'optimizer settings (' +
                    ', '.join(divergence.RESUMABLE_CHANGES) + '); the change '
                    'is recorded in config.yaml.')
flags.DEFINE_enum('mode', 'train', MODES, 'train: train (then evaluate once); '
                  'eval: evaluate the latest checkpoint; traineval: evaluate '
                  'after every stage; export: write SavedModel, .keras and '
                  'TFLite models of the EMA weights to model_dir/export.')
flags.DEFINE_bool('export_to_tpu', False, 'Unused; kept for compatibility.')
flags.DEFINE_enum('ablation', None, progressive.ABLATIONS, 'Progressive '
                  'learning ablation (default: train.ablation of the config, '
                  'none): none; no_progressive (final size and '
                  'final regularization from the first step); '
                  'fixed_image_size; fixed_regularization; '
                  'constant_weight_decay (train.weight_decay_inc = 0).')
flags.DEFINE_enum('strategy', None, train_lib.STRATEGIES, 'tf.distribute '
                  'strategy (default: runtime.strategy of the config).')


def default_model_dir(model_name: str, dataset_cfg: str,
                      ablation: str = 'none') -> str:
  """runs/<model>_<dataset config>[_<ablation>]: one folder per experiment,
  so that rerunning a command resumes it and ablation modes never mix."""
  name = f'{model_name}_{dataset_cfg.lower()}'
  if ablation and ablation != 'none':
    name += f'_{ablation}'
  return os.path.join('runs', name)


def run(mode: str, config: hparams.Config, model_dir: str,
        data_dir=None, strategy=None, archive_ckpt=True, eval_name=None,
        resume_from=None):
  """Runs one mode; returns the last metrics.

  Training holds model_dir's lock from the first write to the export.
  Evaluation writes nothing while another process trains in the folder: it
  prints its result and leaves metrics.json to the trainer.
  """
  trainer = train_lib.Trainer(config, model_dir, strategy=strategy,
                              data_dir=data_dir)
  trainer.archive_ckpt = archive_ckpt
  trainer.eval_name = eval_name
  if mode == 'eval':
    return _evaluate(trainer)
  if mode == 'export':
    return _export(trainer)
  return resume.train_in_folder(
      trainer, eval_every_stage=(mode == 'traineval'),
      resume_from=resume_from, final_eval=(mode == 'train'), export=True)


def _trained_folder(trainer, purpose: str):
  """The run folder of a finished or running training, checked for `purpose`
  ('evaluate', 'export'): a folder, with checkpoints, of this config."""
  folder = trainer.run_dir
  folder.check_is_folder()
  if not folder.checkpoints():
    raise train_errors.TrainingError(
        f'no checkpoint in {folder.path} to {purpose}; train first '
        '(--mode=train)')
  # Evaluating and exporting change no checkpoint: a folder without its
  # config is read with the flags given (a model that does not fit is
  # refused by the restore).
  folder.check_saved_config(trainer.config, missing_ok=True)
  return folder


def _evaluate(trainer):
  folder = _trained_folder(trainer, 'evaluate')
  trainer.check_inputs(is_training=False)
  with folder.owned_if_free() as owned:
    trainer.checkpoints.restore()
    metrics = reporting.evaluate_restored(trainer, record=owned)
  if not owned:
    print(f'{folder.path} is in use by {folder.holder()}: the result above '
          'is printed only, metrics.json is left to that run', flush=True)
  return metrics


def _export(trainer):
  """SavedModel, .keras and TFLite files of the latest checkpoint's EMA
  weights, written to model_dir/export under the folder's lock."""
  folder = _trained_folder(trainer, 'export')
  with folder.owned():
    trainer.checkpoints.restore()
    return export.export_run(trainer)


def rerun_command(changes, resume_from=None):
  """This program's command line with `changes` to the config (dotted keys,
  added to --sweeps, which is applied last) and --resume_from set; None
  when --sweeps is a YAML file and cannot take them."""
  sweeps = FLAGS.sweeps.strip()
  if sweeps.endswith(('.yaml', '.yml')) and '=' not in sweeps:
    return None
  sweeps = ','.join([sweeps] * bool(sweeps) +
                    [f'{key}={value}' for key, value in changes.items()])
  args = [sys.executable, os.path.abspath(sys.argv[0])]
  for name in FLAGS:
    flag = FLAGS[name]
    if (flag.present and flag.name == name and
        name not in ('sweeps', 'resume_from')):
      args.append(flag.serialize())
  args.append(f'--sweeps={sweeps}')
  if resume_from:
    args.append(f'--resume_from={resume_from}')
  return shlex.join(args)


def _fail(message: str):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f'unexpected arguments {" ".join(argv[1:])!r}; every '
                    'option is a --flag=value')
  try:
    config = build_config(FLAGS.model_name, FLAGS.dataset_cfg,
                          FLAGS.hparam_str, FLAGS.sweeps, FLAGS.ablation)
  except (hparams.ConfigError, train_errors.DatasetError, ValueError) as e:
    cli.usage_error(str(e))
  if FLAGS.resume_from and FLAGS.mode == 'eval':
    cli.usage_error('--resume_from is for --mode=train or --mode=traineval')
  if FLAGS.use_tpu or FLAGS.tpu:
    config.runtime.strategy = 'tpu'
    config.runtime.tpu = FLAGS.tpu
  if FLAGS.strategy:
    config.runtime.strategy = FLAGS.strategy
  model_dir = FLAGS.model_dir or default_model_dir(
      FLAGS.model_name, FLAGS.dataset_cfg, config.train.ablation)
  print(f'model_dir: {model_dir}' + ('' if FLAGS.model_dir else
                                     ' (default; --model_dir to change)'),
        flush=True)
  logging.info('config:\n%s', config)
  try:
    result = run(FLAGS.mode, config, model_dir, FLAGS.data_dir,
                 archive_ckpt=FLAGS.archive_ckpt, eval_name=FLAGS.eval_name,
                 resume_from=FLAGS.resume_from)
  except train_errors.Diverged as e:
    command = rerun_command(e.changes, e.resume_from)
    _fail(f'{e}; to go on, run: {command}' if command else str(e))
  except (train_errors.TrainingError, train_errors.DatasetError,
          run_dir.RunDirError) as e:
    _fail(str(e))
  except OSError as e:  # A write outside the run folder's own checks.
    if e.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES):
      _fail(f'{e}; free space or pick writable folders, then rerun')
    raise
  except KeyboardInterrupt as e:
    # In training the trainer has saved a checkpoint and said so (elsewhere
    # there is nothing to save); a traceback would only bury that line.
    # Exit with the status of a process killed by the signal.
    sys.exit(128 + getattr(e, 'signum', signal.SIGINT))
  print('final:', {k: v for k, v in result.items() if not isinstance(v, dict)})


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
