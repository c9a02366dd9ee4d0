"""Top-1 of a finished run's EMA weights at other image sizes.

Progressive learning trains the early stages at smaller sizes than the
evaluation; this shows how size-specific the final network is. Restores the
latest checkpoint of a model_dir with the run's own config.yaml and
evaluates the eval split at each size.

  python bench/eval_sizes.py runs/fm_v2 --sizes=32,48,56,64,72
  python bench/eval_sizes.py runs/fm_v3 --sizes=64 --split=train

`--split=train` scores the training images without augmentation: next to the
test score it tells underfitting (both low) from overfitting (train near 100 %).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bench_cli  # noqa: E402  pylint: disable=wrong-import-position
bench_cli.quiet_tensorflow_import()

from automl_effnetv2 import hparams  # noqa: E402
from automl_effnetv2 import run_dir  # noqa: E402
from automl_effnetv2 import train_lib  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('model_dir')
  parser.add_argument('--sizes', default='32,48,56,64,72,80')
  parser.add_argument('--data_dir', default=None)
  parser.add_argument('--split', default=None,
                      help='a split of the dataset config (default: the '
                      "run's eval split)")
  args = parser.parse_args()
  folder = run_dir.RunDir(args.model_dir)
  saved = folder.saved_config()
  if saved is None:
    sys.exit(f'error: no {run_dir.CONFIG_FILE} in {args.model_dir}; pass '
             'the model_dir of a run')
  config = hparams.Config(saved)
  if args.split:  # The dataset input rejects unknown splits, naming the valid ones.
    config.eval.split = args.split
  trainer = train_lib.Trainer(config, args.model_dir, data_dir=args.data_dir)
  if not folder.checkpoints():
    sys.exit(f'error: no checkpoint in {args.model_dir}')
  step = trainer.checkpoints.restore()
  # The stage that trained the checkpoint's last step: a mid-run
  # checkpoint of a progressive run was trained below the final size.
  last = (trainer.plan.stage_at_step(max(step - 1, 0)) or
          trainer.plan.stages[-1])
  print(f'{args.model_dir} at step {step}, trained last at '
        f'{last.image_size} px, EMA weights, split {trainer.eval_split}')
  for size in [int(s) for s in args.sizes.split(',')]:
    trainer.eval_size = size
    top1 = trainer.evaluate(use_ema=True)['eval/acc_top1']
    print(f'{size:4d} px: top-1 {100 * top1:.2f} %', flush=True)


if __name__ == '__main__':
  main()
