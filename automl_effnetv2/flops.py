"""Multiply-adds per image of a built model, layer by layer.

  python -m automl_effnetv2.flops --model_name=efficientnetv2-b0 \
      --sizes=28,40,48,52,56,64 --num_classes=10

The count the papers quote as "FLOPs" (EfficientNetV2-B0: 0.72 B at 224 px):
one multiply-add per weight use in convolutions and dense layers, read from
each layer's real input and output shapes, so that the rounding up of odd
feature maps by 'same' padding at stride 2 is counted as the network runs
it. Normalizations, activations, pooling and the squeeze-excitation product
are left out, as in those figures.
"""
import json
import os
import sys
from typing import Dict, Sequence

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags

from automl_effnetv2 import cli


def layer_multiply_adds(layer) -> int:
  """Multiply-adds of one call of a built layer (0 for layers without)."""
  import keras
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    _, height, width, channels = layer.output.shape
    kh, kw = layer.kernel_size
    return int(height * width * channels * kh * kw)
  if isinstance(layer, keras.layers.Conv2D):
    _, height, width, out_channels = layer.output.shape
    in_channels = layer.input.shape[-1]
    kh, kw = layer.kernel_size
    return int(height * width * out_channels * kh * kw * in_channels //
               layer.groups)
  if isinstance(layer, keras.layers.Dense):
    return int(layer.input.shape[-1] * layer.units)
  return 0


def model_multiply_adds(model) -> int:
  """Sum over a functional model's layers (nested models included)."""
  import keras
  total = 0
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      total += model_multiply_adds(layer)
    else:
      total += layer_multiply_adds(layer)
  return total


def multiply_adds_per_image(model_name: str, sizes: Sequence[int],
                            model_config=None) -> Dict[str, int]:
  """{str(size): multiply-adds of one image} for square inputs."""
  from automl_effnetv2 import effnetv2_model
  out = {}
  for size in sizes:
    model = effnetv2_model.EffNetV2Model(
        model_name, model_config, input_shape=(int(size), int(size), 3))
    out[str(int(size))] = model_multiply_adds(model)
  return out


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string('model_name', 'efficientnetv2-b0', 'Model name.')
  flags.DEFINE_list('sizes', ['224'], 'Square input sizes in pixels.')
  flags.DEFINE_integer('num_classes', None, 'Classes of the head (default: '
                       "the model's own).")
  flags.DEFINE_string('output', None, 'Also write the counts to this JSON.')


def main(argv):
  del argv
  try:
    sizes = [int(s) for s in FLAGS.sizes]
  except ValueError:
    cli.usage_error(f'--sizes={",".join(FLAGS.sizes)}: expected integers, '
                    'e.g. --sizes=28,64')
  if any(s < 1 for s in sizes):
    cli.usage_error(f'--sizes={",".join(FLAGS.sizes)}: sizes must be '
                    'positive')
  config = ({'num_classes': FLAGS.num_classes}
            if FLAGS.num_classes else None)
  counts = multiply_adds_per_image(FLAGS.model_name, sizes, config)
  for size, count in counts.items():
    print(f'{size} px: {count / 1e9:.4f} G multiply-adds per image')
  if FLAGS.output:
    record = dict(model_name=FLAGS.model_name, num_classes=FLAGS.num_classes,
                  multiply_adds_per_image=counts)
    tmp = FLAGS.output + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, FLAGS.output)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
