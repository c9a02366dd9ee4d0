r"""Prints the top-5 classes of image files.

  python -m automl_effnetv2.infer --model_dir=runs/fashion_mnist shoe.png
  python -m automl_effnetv2.infer \
      --saved_model=runs/fashion_mnist/export/saved_model shoe.png

`--model_dir` uses the EMA weights of the run's latest checkpoint and its
saved config.yaml; `--saved_model` uses an export of `main.py --mode=export`.
Either way the image goes through the run's eval preprocessing (PNG, JPEG,
GIF or BMP; grayscale or RGB; any size). Class names: Fashion-MNIST's are
built in; ImageNet's come from Keras (one download) and are replaced by
class indices, with a note, when unavailable.
"""
import os
import sys

if __package__ in (None, ''):  # `python infer.py` from inside the package.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from automl_effnetv2 import cli
from automl_effnetv2 import export
from automl_effnetv2 import hparams
from automl_effnetv2 import labels
from automl_effnetv2 import run_dir
from automl_effnetv2 import train_errors
from automl_effnetv2 import train_lib
from automl_effnetv2 import utils

FLAGS = flags.FLAGS


def define_flags():
  # Defined only when run as a program: main.py, imported next to this
  # module (tests, notebooks), has its own --model_dir.
  flags.DEFINE_string('model_dir', None, 'A training run folder '
                      '(config.yaml and checkpoints).')
  flags.DEFINE_string('saved_model', None, 'A SavedModel written by main.py '
                      '--mode=export (model_dir/export/saved_model).')
  flags.DEFINE_integer('top', 5, 'How many classes to print per image.')


class InferenceError(RuntimeError):
  """The model or an image cannot be used; the message says why."""


class Predictor:
  """uint8 images -> probabilities, with the class names of the run."""

  def __init__(self, predict, dataset: str, num_classes: int, names=None):
    self.predict = predict
    self.note = ''
    if not names:
      names, self.note = labels.lookup(dataset, num_classes)
    self.names = names

  def name(self, index: int) -> str:
    return self.names[index] if self.names else f'class {index}'

  def top(self, image, k: int):
    """[(class name, probability)] of the k most likely classes."""
    probabilities = self.predict(image[None])
    order = np.argsort(-probabilities)[:k]
    return [(self.name(int(i)), float(probabilities[i])) for i in order]


def from_model_dir(model_dir: str) -> Predictor:
  config_path = os.path.join(model_dir, run_dir.CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise InferenceError(f'{model_dir} is not a training run (no '
                         f'{run_dir.CONFIG_FILE})')
  if not tf.train.latest_checkpoint(model_dir):
    raise InferenceError(f'no checkpoint in {model_dir}; train first')
  config = hparams.Config(hparams.load_yaml(config_path))
  trainer = train_lib.Trainer(config, model_dir)
  trainer.checkpoints.restore()
  model = export.inference_model(trainer)
  serve = export.serving_function(model, trainer.eval_size, trainer.augment)
  return Predictor(lambda images: serve(images)['probabilities'].numpy()[0],
                   config.data.ds_name, config.data.num_classes)


def from_saved_model(path: str) -> Predictor:
  try:
    loaded = tf.saved_model.load(path)
  except (OSError, ValueError, tf.errors.OpError) as e:
    raise InferenceError(f'cannot load the SavedModel {path}: '
                         f'{str(e).splitlines()[0]}') from e
  if 'metadata' not in loaded.signatures:
    raise InferenceError(f'{path} was not written by main.py --mode=export')
  meta = loaded.signatures['metadata']()
  serve = loaded.signatures[export.SERVING_SIGNATURES[0]]
  names = [n.decode() for n in meta['class_names'].numpy()]
  num_classes = serve.structured_outputs['logits'].shape[-1]

  def predict(images):
    return serve(images=tf.constant(images))['probabilities'].numpy()[0]

  return Predictor(predict, meta['dataset'].numpy().decode(), num_classes,
                   names)


def read_image(path: str) -> np.ndarray:
  """A decoded uint8 [H, W, 1 or 3] image (alpha channels dropped)."""
  try:
    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, expand_animations=False).numpy()
  except tf.errors.OpError as e:  # Missing, a folder, not an image.
    raise InferenceError(f'cannot read the image {path}: '
                         f'{utils.op_error_reason(e)}') from e
  return image[..., :1] if image.shape[-1] == 2 else image[..., :3]


def print_top(predictor: Predictor, paths, k: int) -> list:
  """Prints the top-k classes of each image; returns the paths that could
  not be read (each reported on stderr, the others still classified)."""
  failed = []
  for path in paths:
    try:
      top = predictor.top(read_image(path), k)
    except InferenceError as e:
      print(f'error: {e}', file=sys.stderr, flush=True)
      failed.append(path)
      continue
    print(f'{path}:')
    for rank, (name, probability) in enumerate(top, 1):
      print(f'  {rank}. {name} ({probability:.2%})')
    sys.stdout.flush()
  return failed


def main(argv):
  images = argv[1:]
  if not images:
    cli.usage_error('name one or more image files')
  if bool(FLAGS.model_dir) == bool(FLAGS.saved_model):
    cli.usage_error('pass exactly one of --model_dir and --saved_model')
  try:
    predictor = (from_model_dir(FLAGS.model_dir) if FLAGS.model_dir else
                 from_saved_model(FLAGS.saved_model))
  except (InferenceError, train_errors.TrainingError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  if predictor.note:
    print(predictor.note, file=sys.stderr)
  failed = print_top(predictor, images, FLAGS.top)
  if failed:
    print(f'error: {len(failed)} of {len(images)} images could not be read',
          file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
