"""--mode=export and inference: what leaves the project computes what the
trained Keras model computes, on real Fashion-MNIST test images."""
import gzip
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import (CONFIDENT_RUN_HPARAMS, REPO, TF_NATIVE_LOG,
                      build_tiny_config, copy_of_shared_run)
from automl_effnetv2 import augment_spec
from automl_effnetv2 import datasets
from automl_effnetv2 import export
from automl_effnetv2 import infer
from automl_effnetv2 import labels
from automl_effnetv2 import local_data
from automl_effnetv2 import main
from automl_effnetv2 import preprocessing

NUM_IMAGES = 200


def _fashion_mnist_test_images(count):
  """The first `count` test images, uint8 [count, 28, 28, 1], and labels."""
  folder = local_data.default_fashion_mnist_dir()
  with gzip.open(os.path.join(folder, 't10k-images-idx3-ubyte.gz')) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16)
  with gzip.open(os.path.join(folder, 't10k-labels-idx1-ubyte.gz')) as f:
    classes = np.frombuffer(f.read(), np.uint8, offset=8)
  return images.reshape(-1, 28, 28, 1)[:count], classes[:count]


@pytest.fixture(scope='module')
def exported_run(confident_tiny_run, fashion_mnist_tfds_dir,
                 tmp_path_factory):
  """A copy of the shared confident run, exported."""
  config = build_tiny_config(fashion_mnist_tfds_dir, CONFIDENT_RUN_HPARAMS)
  model_dir = copy_of_shared_run(confident_tiny_run,
                                 tmp_path_factory.mktemp('export'))
  paths = main.run('export', config, model_dir,
                   strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
  return config, model_dir, paths


def _keras_logits(paths, config, images):
  """The exported .keras model on the run's eval preprocessing."""
  model = keras.models.load_model(paths['keras'],
                                  custom_objects=export.custom_objects())
  size = config.eval.isize
  batch = tf.stack([preprocessing.preprocess_image(
      tf.constant(image), size, False,
      augment=augment_spec.AugmentSpec.from_config(config.data))
      for image in images])
  return model(batch, training=False).numpy()


def _tflite_logits(path, images):
  interpreter = tf.lite.Interpreter(model_path=path)
  runner = interpreter.get_signature_runner('serving_default')
  return runner(images=images)['logits']


def test_saved_model_and_tflite_compute_the_keras_logits(exported_run):
  config, _, paths = exported_run
  images, classes = _fashion_mnist_test_images(NUM_IMAGES)
  expected = _keras_logits(paths, config, images)
  # The run learned something, so top-1 agreement below means something.
  assert (expected.argmax(-1) == classes).mean() > 0.5
  saved = tf.saved_model.load(paths['saved_model'])
  served = saved.signatures['serving_default'](images=tf.constant(images))
  np.testing.assert_allclose(served['logits'].numpy(), expected, atol=1e-3)
  np.testing.assert_allclose(served['probabilities'].numpy(),
                             tf.nn.softmax(expected).numpy(), atol=1e-4)
  np.testing.assert_allclose(_tflite_logits(paths['tflite'], images),
                             expected, atol=1e-3)
  quantized = _tflite_logits(paths['tflite_dynamic_range'], images)
  assert (quantized.argmax(-1) == expected.argmax(-1)).mean() >= 0.95
  assert os.path.getsize(paths['tflite_dynamic_range']) < 0.5 * (
      os.path.getsize(paths['tflite']))


def test_saved_model_takes_rgb_images_of_any_size(exported_run):
  config, _, paths = exported_run
  images, _ = _fashion_mnist_test_images(4)
  large_rgb = tf.image.resize(tf.image.grayscale_to_rgb(tf.constant(images)),
                              [90, 70])
  large_rgb = tf.cast(tf.round(large_rgb), tf.uint8).numpy()
  saved = tf.saved_model.load(paths['saved_model'])
  served = saved.signatures['serving_default'](images=tf.constant(large_rgb))
  np.testing.assert_allclose(served['logits'].numpy(),
                             _keras_logits(paths, config, large_rgb),
                             atol=1e-3)
  meta = saved.signatures['metadata']()
  assert [n.decode() for n in meta['class_names'].numpy()] == list(
      datasets.FashionMNISTInput.class_names)


def _write_pngs(folder, images):
  paths = []
  for index, image in enumerate(images):
    path = os.path.join(folder, f'image_{index}.png')
    tf.io.write_file(path, tf.io.encode_png(image))
    paths.append(path)
  return paths


def test_infer_prints_the_top_five_class_names(exported_run, tmp_path):
  config, model_dir, paths = exported_run
  images, _ = _fashion_mnist_test_images(2)
  files = _write_pngs(str(tmp_path), images)
  top1 = [datasets.FashionMNISTInput.class_names[i]
          for i in _keras_logits(paths, config, images).argmax(-1)]
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-m', 'automl_effnetv2.infer',
       f'--saved_model={paths["saved_model"]}', *files],
      env=env, cwd=REPO, capture_output=True, text=True, check=True)
  lines = result.stdout.splitlines()
  assert lines[0] == f'{files[0]}:' and lines[6] == f'{files[1]}:'
  assert lines[1].startswith(f'  1. {top1[0]} (')
  assert lines[7].startswith(f'  1. {top1[1]} (')
  assert [line.split('. ')[0] for line in lines[1:6]] == [
      f'  {rank}' for rank in range(1, 6)]
  # The run folder gives the same answer through the checkpoint.
  predictor = infer.from_model_dir(model_dir)
  assert predictor.top(infer.read_image(files[1]), 5)[0][0] == top1[1]


def test_an_unreadable_image_is_one_clean_line_naming_it(tmp_path):
  not_an_image = tmp_path / 'notes.png'
  not_an_image.write_text('not an image')
  for path, reason in [(not_an_image, 'Unknown image file format'),
                       (tmp_path / 'missing.png', 'No such file or directory'),
                       (tmp_path, 'Is a directory')]:
    with pytest.raises(infer.InferenceError) as error:
      infer.read_image(str(path))
    message = str(error.value)
    assert message.startswith(f'cannot read the image {path}: {reason}')
    assert '{{' not in message and 'Op:' not in message  # No TF internals.
    assert '\n' not in message


@pytest.mark.parametrize('args, expected', [
    ([], 'name one or more image files'),
    (['--top=x', 'a.png'], "flag --top=x: invalid literal for int()"),
])
def test_infer_usage_errors_are_one_line_with_status_2(tmp_path, args,
                                                       expected):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-m', 'automl_effnetv2.infer', *args], env=env,
      cwd=tmp_path, capture_output=True, text=True)
  assert result.returncode == 2
  lines = [line for line in result.stderr.splitlines()
           if line.strip() and not TF_NATIVE_LOG.match(line)]
  assert len(lines) == 1 and lines[0].startswith(f'error: {expected}'), lines
  assert lines[0].endswith('(see --help)')


def test_infer_reports_bad_images_and_classifies_the_others(exported_run,
                                                            tmp_path):
  _, _, paths = exported_run
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  missing = str(tmp_path / 'missing.png')
  not_an_image = tmp_path / 'notes.png'
  not_an_image.write_text('not an image')
  good = _write_pngs(str(tmp_path), _fashion_mnist_test_images(1)[0])[0]
  result = subprocess.run(
      [sys.executable, '-m', 'automl_effnetv2.infer',
       f'--saved_model={paths["saved_model"]}', missing, str(not_an_image),
       good], env=env, cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 1  # Not every image could be classified...
  assert 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('error:')]
  assert errors[0] == (f'error: cannot read the image {missing}: No such '
                       'file or directory')
  assert errors[1].startswith(f'error: cannot read the image {not_an_image}: '
                              'Unknown image file format')
  assert errors[2] == 'error: 2 of 3 images could not be read'
  assert len(errors) == 3 and '{{' not in result.stderr
  # ... and the good one, named after the bad ones, was.
  lines = result.stdout.splitlines()
  assert lines[0] == f'{good}:' and lines[1].startswith('  1. ')
  assert len(lines) == 6


def test_imagenet_names_unavailable_offline_are_announced(monkeypatch,
                                                          tmp_path):
  from keras.src.applications import imagenet_utils  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))
  monkeypatch.setattr(imagenet_utils, 'CLASS_INDEX', None)
  monkeypatch.setattr(imagenet_utils, 'CLASS_INDEX_PATH',
                      (tmp_path / 'absent' / 'index.json').as_uri())
  names, note = labels.lookup('imagenet', 1000)
  assert names is None
  assert note.startswith('ImageNet class names are unavailable')
  predictor = infer.Predictor(lambda images: np.eye(1000)[7], 'imagenet', 1000)
  assert predictor.top(np.zeros((4, 4, 3), np.uint8), 1) == [('class 7', 1.0)]


def test_class_names_come_from_the_datasets_input(monkeypatch):
  assert labels.lookup('fashion_mnist', 10) == (
      list(datasets.FashionMNISTInput.class_names), '')
  # Names are given only when they fit the model's class count.
  assert labels.lookup('fashion_mnist', 1000) == (None, '')
  assert labels.lookup('imagenet21k', 21843) == (None, '')
  assert labels.lookup('cifar10', 10) == (None, '')
  assert labels.lookup('no_such_dataset', 10) == (None, '')
  # A new dataset names its classes on its Input, nowhere else.
  monkeypatch.setattr(datasets.CIFAR10Input, 'class_names',
                      tuple(f'c{i}' for i in range(10)))
  assert labels.class_names('cifar10', 10) == [f'c{i}' for i in range(10)]
  assert labels.class_names('cifar100', 100) is None
