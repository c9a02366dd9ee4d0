"""Exports a trained run in the forms people deploy.

`export_run(trainer)` (`main.py --mode=export`) takes the EMA weights of the
restored run and writes to `model_dir/export/`:
- `saved_model/`: a TensorFlow SavedModel whose `serving_default` (also
  `serve`) signature takes a batch of uint8 images `[N, H, W, C]` of any size
  with 1 or 3 channels and returns `logits` and `probabilities`; the run's
  eval preprocessing (crop, resize, scaling of `data.augname` at the eval
  size) happens inside. Its `metadata` signature returns the dataset name,
  the eval image size and the class names (empty when unknown offline);
- `model.keras`: the Keras model (float32, preprocessed images in); load it
  with `keras.models.load_model(path, custom_objects=custom_objects())`;
- `model.tflite` (float32) and `model_dynamic_range.tflite` (weights int8,
  activations float), both converted from the serving signature, so they take
  the same uint8 images (resize the input tensor to the image's size).

The exported model is rebuilt in float32 whatever precision training used.
"""
import contextlib
import copy
import os
from typing import Dict

import keras
import tensorflow as tf

from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import labels
from automl_effnetv2 import preprocessing
from automl_effnetv2 import utils

SAVED_MODEL = 'saved_model'
KERAS_FILE = 'model.keras'
TFLITE_FLOAT = 'model.tflite'
TFLITE_DYNAMIC_RANGE = 'model_dynamic_range.tflite'
SERVING_SIGNATURES = ('serving_default', 'serve')


@contextlib.contextmanager
def ema_weights_in(model, ema):
  """The EMA averages sit in `model` inside the block (a no-op without EMA)."""
  restore = ema.swap_into_model() if ema else None
  try:
    yield model
  finally:
    if restore:
      restore()


def custom_objects() -> Dict[str, object]:
  """What `keras.models.load_model` needs to rebuild `model.keras`."""
  objects = {cls.__name__: cls for cls in (
      effnetv2_model.FusedBatchNormalization, effnetv2_model.DepthwiseConv2D,
      effnetv2_model.StochasticDepth, effnetv2_model.ScheduledDropout,
      effnetv2_model.ConvKernelInitializer,
      effnetv2_model.DenseKernelInitializer)}
  # Activation layers serialize TensorFlow functions by their Python name.
  for name in utils._ACTIVATIONS:  # pylint: disable=protected-access
    function = utils.get_act_fn(name)
    objects.setdefault(function.__name__, function)
  return objects


def inference_model(trainer) -> keras.Model:
  """A float32 copy of the trainer's model holding its EMA weights."""
  model_config = trainer.config.model.as_dict()
  model_config['num_classes'] = trainer.config.data.num_classes
  policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy('float32')
  try:
    model = effnetv2_model.EffNetV2Model(None, copy.deepcopy(model_config))
  finally:
    keras.mixed_precision.set_global_policy(policy)
  with ema_weights_in(trainer.model, trainer.ema):
    model.set_weights(trainer.model.get_weights())
  return model


def serving_function(model, image_size: int, augment):
  """uint8 images [N, H, W, 1 or 3] -> {'logits', 'probabilities'};
  `augment` (an AugmentSpec) picks the eval preprocessing family."""
  image_size = int(image_size)

  def preprocess(image):
    return preprocessing.preprocess_image(image, image_size, False,
                                          augment=augment)

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, None], tf.uint8, name='images')],
               autograph=False)  # No Python branch on tensors to convert.
  def serve(images):
    batch = tf.map_fn(preprocess, images, fn_output_signature=tf.TensorSpec(
        [image_size, image_size, 3], tf.float32))
    logits = tf.cast(model(batch, training=False), tf.float32)
    return {'logits': logits, 'probabilities': tf.nn.softmax(logits)}

  return serve


def write_saved_model(model, path: str, image_size: int, augment,
                      dataset: str):
  """A SavedModel with the serving and metadata signatures."""
  serve = serving_function(model, image_size, augment)
  names = labels.class_names(dataset, model.output_shape[-1]) or []

  @tf.function(input_signature=[], autograph=False)
  def metadata():
    return {'dataset': tf.constant(dataset),
            'image_size': tf.constant(int(image_size)),
            'class_names': tf.constant(names, tf.string, shape=[len(names)])}

  archive = keras.export.ExportArchive()
  archive.track(model)
  for name in SERVING_SIGNATURES:
    archive.add_endpoint(name, serve)
  archive.add_endpoint('metadata', metadata)
  archive.write_out(path, verbose=False)
  return path


def write_tflite(saved_model: str, path: str, quantize: bool):
  """Converts the serving signature; `quantize`: dynamic-range int8 weights."""
  converter = tf.lite.TFLiteConverter.from_saved_model(
      saved_model, signature_keys=[SERVING_SIGNATURES[0]])
  if quantize:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  with open(path, 'wb') as f:
    f.write(converter.convert())
  return path


def export_run(trainer, export_dir: str = None) -> Dict[str, str]:
  """Writes every export of the restored run; returns {kind: path}."""
  export_dir = export_dir or os.path.join(trainer.model_dir, 'export')
  if not trainer.is_chief:
    return {}
  os.makedirs(export_dir, exist_ok=True)
  model = inference_model(trainer)
  data = trainer.config.data
  paths = {}
  paths['saved_model'] = write_saved_model(
      model, os.path.join(export_dir, SAVED_MODEL), trainer.eval_size,
      trainer.augment, data.ds_name)
  keras_model = keras.Model(model.inputs, model.outputs, name=model.name)
  paths['keras'] = os.path.join(export_dir, KERAS_FILE)
  keras_model.save(paths['keras'])
  paths['tflite'] = write_tflite(paths['saved_model'],
                                 os.path.join(export_dir, TFLITE_FLOAT), False)
  paths['tflite_dynamic_range'] = write_tflite(
      paths['saved_model'], os.path.join(export_dir, TFLITE_DYNAMIC_RANGE),
      True)
  for kind, path in paths.items():
    print(f'exported {kind}: {path}', flush=True)
  return paths
