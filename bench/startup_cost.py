r"""CPU seconds a fresh training process spends before its steps run.

A short run (the test suite's tiny runs, a resumed run, each stage switch)
pays these costs once per process or per stage, and they can dwarf its
steps: importing TensorFlow, building the model, building the stage's input
pipeline (tracing the per-image preprocessing and augmentation), and the
first compiled step (tracing the training step, then TensorFlow's graph
optimizations), then the first evaluation.

Two variants are measured in turns, each in fresh processes:
  plain:    the package as it is; its step and preprocessing functions are
            traced as written (`tf.autograph.experimental.do_not_convert`).
  autograph: the same with `do_not_convert` made a no-op before the package
            is imported, so autograph converts their source first, as
            `tf.function` and `tf.data` do by default.

  python bench/startup_cost.py --repeats 3 --output runs/startup_cost.json

The default config is the test suite's tiny one (B0 at width and depth
0.25, 32 px, RandAugment, mixup and cutmix, batch 16) on Fashion-MNIST from
the Debian files (prepared for tfds in a temporary folder);
`--hparam_str` adds overrides. Medians over the repeats; the ratio is
autograph / plain for each phase.
"""
import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import bench_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = ('plain', 'autograph')
PHASES = ('imports', 'trainer', 'pipeline', 'first_step', 'next_steps',
          'first_eval')
TINY_HPARAMS = (
    'model.width_coefficient=0.25,model.depth_coefficient=0.25,'
    'model.feature_size=64,train.batch_size=16,train.isize=32,eval.isize=32,'
    'train.stages=0,train.min_steps=0,train.lr_warmup_epoch=0,'
    'data.augname=ft_randaug,data.ram=10,data.mixup_alpha=0.2,'
    'data.cutmix_alpha=0.2,data.shuffle_size_k=1,eval.batch_size=1000,'
    'data.splits.eval.num_images=1000')
NEXT_STEPS = 10


def _fail(message):
  bench_cli.fail(__file__, message)


def parse_args(argv):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--repeats', type=int, default=3,
                      help='fresh processes per variant, in turns')
  parser.add_argument('--hparam_str', default='',
                      help='overrides after the tiny config')
  parser.add_argument('--output', help='JSON file to write')
  parser.add_argument('--tfds_data_dir',
                      help='tfds folder with fashion_mnist (default: '
                      'prepared from the Debian files in a temporary folder)')
  parser.add_argument('--child', choices=VARIANTS, help=argparse.SUPPRESS)
  parser.add_argument('--model_dir', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.repeats < 1:
    _fail('--repeats must be 1 or more')
  if args.output and not os.path.isdir(
      os.path.dirname(os.path.abspath(args.output))):
    _fail(f'--output {args.output}: its folder does not exist')
  return args


def tiny_config(tfds_data_dir: str, hparam_str: str):
  """The measured config: TINY_HPARAMS on FashionMNISTFt, then hparam_str."""
  # pylint: disable-next=import-outside-toplevel
  from automl_effnetv2 import main as main_lib
  config = main_lib.build_config(
      'efficientnetv2-b0', 'FashionMNISTFt',
      f'{TINY_HPARAMS},data.tfds_data_dir={tfds_data_dir}')
  config.override(hparam_str)
  return config


# -- one measured process ------------------------------------------------------
def measure_one(variant: str, tfds_data_dir: str, hparam_str: str,
                model_dir: str) -> dict:
  """CPU seconds of each phase in this process (all its threads)."""
  clock = time.process_time
  seconds = {}
  start = clock()
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if variant == 'autograph':
    tf.autograph.experimental.do_not_convert = lambda func=None, **_: func
  sys.path.insert(0, REPO)
  importlib.import_module('automl_effnetv2.main')  # What a run imports.
  # pylint: disable-next=import-outside-toplevel
  from automl_effnetv2 import train_lib
  seconds['imports'] = clock() - start
  config = tiny_config(tfds_data_dir, hparam_str)
  start = clock()
  trainer = train_lib.Trainer(config, model_dir,
                              strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
  seconds['trainer'] = clock() - start
  start = clock()
  iterator = trainer.stage_iterator(trainer.plan.stages[0], 0)
  seconds['pipeline'] = clock() - start
  start = clock()
  trainer.run_steps(iterator, 1)
  seconds['first_step'] = clock() - start
  start = clock()
  trainer.run_steps(iterator, NEXT_STEPS)
  seconds['next_steps'] = clock() - start
  start = clock()
  trainer.evaluate()
  seconds['first_eval'] = clock() - start
  return seconds


# -- the driver ------------------------------------------------------------------
def run_child(variant, tfds_data_dir, hparam_str, scratch):
  model_dir = tempfile.mkdtemp(dir=scratch)
  command = [sys.executable, os.path.abspath(__file__), '--child', variant,
             '--tfds_data_dir', tfds_data_dir, '--hparam_str', hparam_str,
             '--model_dir', model_dir]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  done = subprocess.run(command, capture_output=True, text=True, env=env,
                        check=False)
  if done.returncode != 0:
    _fail(f'the {variant} process failed: '
          f'{(done.stderr.strip().splitlines() or ["no output"])[-1]}')
  return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(samples: dict) -> dict:
  """Median seconds per variant and phase, their totals, and the ratios."""
  medians = {variant: {phase: statistics.median(s[phase] for s in runs)
                       for phase in PHASES}
             for variant, runs in samples.items()}
  for variant in medians:
    medians[variant]['total'] = sum(medians[variant][p] for p in PHASES)
  ratios = {phase: medians['autograph'][phase] / medians['plain'][phase]
            for phase in PHASES + ('total',) if medians['plain'][phase] > 0}
  return {'median_cpu_seconds': medians, 'autograph_over_plain': ratios}


def print_table(summary: dict):
  medians, ratios = summary['median_cpu_seconds'], summary[
      'autograph_over_plain']
  print(f'{"phase":<12}{"plain":>9}{"autograph":>11}{"ratio":>8}')
  for phase in PHASES + ('total',):
    ratio = f'{ratios[phase]:.2f}' if phase in ratios else '-'
    print(f'{phase:<12}{medians["plain"][phase]:9.2f}'
          f'{medians["autograph"][phase]:11.2f}{ratio:>8}')


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  if args.child:
    seconds = measure_one(args.child, args.tfds_data_dir, args.hparam_str,
                          args.model_dir)
    print(json.dumps(seconds))
    return 0
  sys.path.insert(0, REPO)
  # pylint: disable=import-outside-toplevel
  from automl_effnetv2 import hparams
  from automl_effnetv2 import local_data
  # pylint: enable=import-outside-toplevel
  try:  # A wrong override is reported before any data or process is made.
    tiny_config(args.tfds_data_dir or '', args.hparam_str)
  except hparams.ConfigError as error:
    _fail(f'--hparam_str: {error}')
  with tempfile.TemporaryDirectory() as scratch:
    tfds_data_dir = args.tfds_data_dir
    if not tfds_data_dir:
      folder = local_data.default_fashion_mnist_dir()
      if not folder:
        _fail('no Fashion-MNIST files: apt-get install -y '
              'dataset-fashion-mnist, or give --tfds_data_dir')
      tfds_data_dir = os.path.join(scratch, 'tfds')
      local_data.prepare_fashion_mnist(folder, tfds_data_dir)
    samples = {variant: [] for variant in VARIANTS}
    for repeat in range(args.repeats):
      for variant in VARIANTS:
        samples[variant].append(run_child(variant, tfds_data_dir,
                                          args.hparam_str, scratch))
        print(f'repeat {repeat + 1}/{args.repeats} {variant}: '
              f'{sum(samples[variant][-1].values()):.2f} cpu s', flush=True)
  summary = summarize(samples)
  print_table(summary)
  if args.output:
    with open(args.output, 'w') as f:
      json.dump(dict(summary, samples=samples, hparam_str=args.hparam_str,
                     next_steps=NEXT_STEPS), f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main())
