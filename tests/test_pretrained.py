"""train.ft_init_ckpt: upstream's checkpoints, Keras' weight files and this
project's exports load by name, or are refused before anything is written.

Every file is made here from randomly initialized models (no network): Keras'
files by keras.applications itself, upstream's checkpoints with upstream's
variable names written by TensorFlow's SaveV2 op.
"""
import os

import h5py
import keras
from keras.src.applications import efficientnet_v2 as keras_efficientnet_v2
from keras.src.legacy.saving import legacy_h5_format
import numpy as np
import pytest
import tensorflow as tf

from automl_effnetv2 import effnetv2_model
from automl_effnetv2 import main
from automl_effnetv2 import pretrained
from test_model_faithfulness import (  # The architecture check's helper.
    _randomize_bn_statistics as randomize_bn_statistics)

EMA = pretrained.EMA_SUFFIX


# -- making the files ----------------------------------------------------------
def _randomize_bn_statistics(model, seed=0):
  """Non-trivial BN moving statistics, so inference really uses them."""
  randomize_bn_statistics(model, np.random.default_rng(seed))
  return model


def _keras_model(app, size, **kwargs):
  model = app(weights=None, input_shape=(size, size, 3),
              classifier_activation=None, **kwargs)
  return _randomize_bn_statistics(model)


def _without_top(model):
  """Keras' include_top=False model: the same layers up to top_activation."""
  return keras.Model(model.input, model.get_layer('top_activation').output)


def _save(model, path):
  """`.weights.h5`: Keras 3's format; any other `.h5`: Keras' legacy one."""
  if path.endswith('.weights.h5'):
    model.save_weights(path)
  else:
    with h5py.File(path, 'w') as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, model)
  return path


def _with_keras2_names(path):
  """Rewrites a legacy file as Keras 2 (which wrote the files Keras
  downloads) names weights: ':0' suffixes, `depthwise_kernel`."""
  with h5py.File(path, 'a') as f:
    for layer in f.attrs['layer_names']:
      group = f[layer]
      renamed = []
      for name in group.attrs['weight_names']:
        name = name.decode() if isinstance(name, bytes) else name
        new = name + ':0'
        if 'dwconv' in name:
          new = name.replace('/kernel', '/depthwise_kernel') + ':0'
        group.move(name, new)
        renamed.append(new.encode())
      group.attrs['weight_names'] = renamed
  return path


def write_upstream_checkpoint(prefix, model, ema_model=None, drop=()):
  """A name-based checkpoint as upstream's main.py writes it: variables
  under the model-name scope, EMA shadows (from `ema_model`), an optimizer
  slot and the global step; names containing any of `drop` left out."""
  names = pretrained.upstream_variable_names(model)
  tensors = {}
  for source, suffix in ((model, ''), (ema_model, EMA)):
    if source is None:
      continue
    for variable in source.weights:
      if variable.path in names:
        tensors[names[variable.path] + suffix] = variable.numpy()
  first = names['stem_conv/kernel']
  tensors[first + '/RMSProp'] = np.zeros_like(tensors[first])
  tensors['global_step'] = np.array(1234, np.int64)
  tensors = {k: v for k, v in tensors.items()
             if not any(part in k for part in drop)}
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors),
                    shape_and_slices=[''] * len(tensors),
                    tensors=[tf.constant(v) for v in tensors.values()])
  return prefix


def _port(name='efficientnetv2-b0', num_classes=1000, **config):
  return effnetv2_model.get_model(
      name, num_classes=num_classes, model_config=dict(fused_bn=False,
                                                       **config))


def _images(size, seed=1):
  return np.random.default_rng(seed).uniform(
      -1, 1, (2, size, size, 3)).astype('float32')


def _scaled_input(keras_model, images):
  """What Keras' in-model preprocessing feeds its stem."""
  return keras.Model(keras_model.input,
                     keras_model.get_layer('stem_conv').input)(images)


def _assert_same_outputs(port, keras_model, images, top):
  if top:
    expected = keras_model(images).numpy()
    got = port(_scaled_input(keras_model, images)).numpy()
  else:
    expected = _without_top(keras_model)(images).numpy()
    body = keras.Model(port.input, port.get_layer('head_act').output)
    got = body(_scaled_input(keras_model, images)).numpy()
  assert np.abs(expected).max() > 1e-2  # Not a comparison of zeros.
  np.testing.assert_array_less(np.abs(got - expected).max(), 1e-4)


# -- Keras' files ---------------------------------------------------------------
@pytest.fixture(scope='module')
def keras_b0():
  return _keras_model(keras.applications.EfficientNetV2B0, 64)


@pytest.mark.parametrize('file_name', ['efficientnetv2-b0.h5',
                                       'efficientnetv2-b0_notop.h5',
                                       'b0.weights.h5', 'b0_notop.weights.h5'])
def test_keras_b0_files_give_keras_logits(keras_b0, tmp_path, file_name):
  top = 'notop' not in file_name
  path = _save(keras_b0 if top else _without_top(keras_b0),
               str(tmp_path / file_name))
  port = _port()
  head_before = port.get_layer('head_dense').kernel.numpy()
  summary = pretrained.load_pretrained(port, path)
  _assert_same_outputs(port, keras_b0, _images(64), top)
  if not top:
    assert 'the file has no classification head' in summary[1]
    np.testing.assert_array_equal(port.get_layer('head_dense').kernel.numpy(),
                                  head_before)
  assert 'efficientnetv2-b0' in summary[0]


def test_keras2_file_as_keras_downloads_it_loads(keras_b0, tmp_path):
  path = _with_keras2_names(_save(keras_b0,
                                  str(tmp_path / 'efficientnetv2-b0.h5')))
  with h5py.File(path) as f:  # The rewrite produced Keras 2's names.
    assert 'depthwise_kernel:0' in str(f['block4a_dwconv2'].attrs[
        'weight_names'])
  port = _port()
  pretrained.load_pretrained(port, path)
  _assert_same_outputs(port, keras_b0, _images(64), top=True)


def test_keras_v2_s_files_give_keras_logits(tmp_path):
  keras_s = _keras_model(keras.applications.EfficientNetV2S, 32)
  port = _port('efficientnetv2-s')
  # Both formats and both heads are covered on B0; here one of each.
  for file_name, top in [('efficientnetv2-s.h5', True),
                         ('s_notop.weights.h5', False)]:
    for variable in port.weights:  # Nothing left from the previous file.
      variable.assign(tf.zeros_like(variable))
    path = _save(keras_s if top else _without_top(keras_s),
                 str(tmp_path / file_name))
    pretrained.load_pretrained(port, path)
    _assert_same_outputs(port, keras_s, _images(32), top)


def test_head_is_skipped_only_for_another_class_count(keras_b0, tmp_path):
  path = _save(keras_b0, str(tmp_path / 'efficientnetv2-b0.h5'))
  port = _port(num_classes=10)
  head_before = port.get_layer('head_dense').kernel.numpy()
  summary = pretrained.load_pretrained(port, path)
  assert summary[1] == ('skipped head_dense/kernel, head_dense/bias: the '
                        'file has 1000 classes, this model 10; left at '
                        'their initialization')
  np.testing.assert_array_equal(port.get_layer('head_dense').kernel.numpy(),
                                head_before)
  np.testing.assert_array_equal(
      port.get_layer('head_bn').moving_variance.numpy(),
      keras_b0.get_layer('top_bn').moving_variance.numpy())


def test_own_export_and_keras_archive_load(tmp_path):
  source = _randomize_bn_statistics(_port(width_coefficient=0.25,
                                          depth_coefficient=0.25))
  weights = str(tmp_path / 'ema.weights.h5')
  source.save_weights(weights)
  archive = str(tmp_path / 'model.keras')
  keras.Model(source.inputs, source.outputs, name=source.name).save(archive)
  for path in (weights, archive):
    target = _port(width_coefficient=0.25, depth_coefficient=0.25)
    pretrained.load_pretrained(target, path)
    np.testing.assert_array_less(
        np.abs(target(_images(32)).numpy() - source(_images(32)).numpy()).max(),
        1e-5)


# -- upstream's checkpoints ---------------------------------------------------------
def test_upstream_names_are_those_of_the_released_checkpoints():
  # Names and shapes as listed in upstream's efficientnetv2-b0 checkpoint:
  # block 0 is fused without expansion, block 1 fused with expansion 4,
  # block 5 the first MBConv block (expansion 4, SE).
  port = _port()
  names = pretrained.upstream_variable_names(port)
  shapes = {names[v.path]: tuple(v.shape) for v in port.weights
            if v.path in names}
  scope = 'efficientnetv2-b0/'
  expected = {
      'stem/conv2d/kernel': (3, 3, 3, 32),
      'stem/tpu_batch_normalization/moving_variance': (32,),
      'blocks_0/conv2d/kernel': (3, 3, 32, 16),
      'blocks_0/tpu_batch_normalization/gamma': (16,),
      'blocks_1/conv2d/kernel': (3, 3, 16, 64),
      'blocks_1/conv2d_1/kernel': (1, 1, 64, 32),
      'blocks_1/tpu_batch_normalization_1/beta': (32,),
      'blocks_5/conv2d/kernel': (1, 1, 48, 192),
      'blocks_5/depthwise_conv2d/depthwise_kernel': (3, 3, 192, 1),
      'blocks_5/tpu_batch_normalization_1/moving_mean': (192,),
      'blocks_5/se/conv2d/kernel': (1, 1, 192, 12),
      'blocks_5/se/conv2d_1/bias': (192,),
      'blocks_5/conv2d_1/kernel': (1, 1, 192, 96),
      'blocks_5/tpu_batch_normalization_2/gamma': (96,),
      'head/conv2d/kernel': (1, 1, 192, 1280),
      'head/tpu_batch_normalization/beta': (1280,),
      'head/dense/kernel': (1280, 1000),
      'head/dense/bias': (1000,),
  }
  for name, shape in expected.items():
    assert shapes.get(scope + name) == shape, name
  assert len(shapes) == len(names) == 361


def test_upstream_checkpoint_loads_the_ema_shadows(tmp_path):
  averaged = _randomize_bn_statistics(_port())
  raw = _port()
  for source, target in zip(averaged.weights, raw.weights):
    target.assign(source.numpy() * 0.5 + 0.01)  # Other values than the EMA.
  # An unpacked upstream archive: a folder whose `checkpoint` file names a
  # path on the machine that trained it.
  folder = tmp_path / 'efficientnetv2-b0'
  write_upstream_checkpoint(str(folder / 'model.ckpt'), raw, averaged)
  (folder / 'checkpoint').write_text(
      'model_checkpoint_path: "/gcs/elsewhere/model.ckpt-218000"\n')
  images = _images(64)
  for use_ema, expected_model in ((True, averaged), (False, raw)):
    port = _port()
    summary = pretrained.load_pretrained(port, str(folder), use_ema=use_ema)
    expected = expected_model(images).numpy()
    np.testing.assert_array_less(np.abs(port(images).numpy() - expected).max(),
                                 1e-4)
    assert (', 361 from EMA shadows' in summary[0]) == use_ema, summary
  assert np.abs(averaged(images).numpy() - raw(images).numpy()).max() > 1e-2


def test_checkpoint_of_upstreams_training_under_tf2_loads(tmp_path):
  """Upstream's main.py on TensorFlow 2.x names the classifier's scope
  'head_1' (Keras' next free name in a graph); such a checkpoint loads like
  a released one, with the same logits."""
  source = _randomize_bn_statistics(_port(num_classes=10))
  prefix = write_upstream_checkpoint(str(tmp_path / 'run' / 'model.ckpt-312'),
                                     source, source)
  renamed = str(tmp_path / 'tf2' / 'model.ckpt-312')
  names = [name for name, _ in tf.train.list_variables(prefix)]
  assert any('/head/dense/' in name for name in names)
  os.makedirs(os.path.dirname(renamed))
  tf.raw_ops.SaveV2(
      prefix=renamed,
      tensor_names=[name.replace('/head/dense/', '/head_1/dense/')
                    for name in names],
      shape_and_slices=[''] * len(names),
      tensors=[tf.constant(tf.train.load_variable(prefix, name))
               for name in names])
  port = _port(num_classes=10)
  summary = pretrained.load_pretrained(port, renamed, use_ema=False)
  assert ': 361 variables' in summary[0], summary
  images = _images(64)
  np.testing.assert_array_less(
      np.abs(port(images).numpy() - source(images).numpy()).max(), 1e-4)


# -- refusals through main, with a real model_dir ---------------------------------
@pytest.fixture
def run_main(tmp_path, capsys):
  """Runs main.main with flags; returns (exit code, stderr, model_dir)."""
  model_dir = tmp_path / 'run'

  def call(weights, model_name='efficientnetv2-b0', extra=''):
    argv = ['main', '--mode=train', '--dataset_cfg=FashionMNISTFt',
            f'--model_name={model_name}', f'--model_dir={model_dir}',
            '--strategy=one_device',
            f'--hparam_str=train.ft_init_ckpt={weights}{extra}']
    main.FLAGS(argv)
    try:
      with pytest.raises(SystemExit) as exit_info:
        main.main([])
    finally:
      main.FLAGS.unparse_flags()
    return exit_info.value.code, capsys.readouterr().err, model_dir

  return call


def _error_line(stderr):
  lines = [l for l in stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1, stderr[-3000:]
  assert 'Traceback' not in stderr
  return lines[0]


def test_b1_weights_into_b0_are_refused(run_main, tmp_path):
  b1 = _keras_model(keras.applications.EfficientNetV2B1, 64)
  path = _save(b1, str(tmp_path / 'efficientnetv2-b1.h5'))
  code, stderr, model_dir = run_main(path)
  line = _error_line(stderr)
  assert code == 1
  assert 'efficientnetv2-b1' in line and 'model efficientnetv2-b0' in line
  assert 'file variables have no place in the model (first: block1b_' in line
  assert not model_dir.exists()


def test_truncated_keras_file_is_refused(run_main, keras_b0, tmp_path):
  path = _save(keras_b0, str(tmp_path / 'efficientnetv2-b0.h5'))
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  code, stderr, model_dir = run_main(path)
  line = _error_line(stderr)
  assert code == 1 and 'truncated' in line and path in line
  assert not model_dir.exists()


_TINY = dict(width_coefficient=0.25, depth_coefficient=0.25, feature_size=64)
_TINY_FLAGS = (',model.width_coefficient=0.25,model.depth_coefficient=0.25,'
               'model.feature_size=64')


def test_truncated_checkpoint_is_refused(run_main, tmp_path):
  prefix = write_upstream_checkpoint(str(tmp_path / 'ckpt' / 'model.ckpt'),
                                     _port(**_TINY))
  data = prefix + '.data-00000-of-00001'
  with open(data, 'r+b') as f:
    f.truncate(os.path.getsize(data) // 2)
  code, stderr, model_dir = run_main(prefix, extra=_TINY_FLAGS)
  line = _error_line(stderr)
  assert code == 1 and 'truncated or damaged' in line
  assert not model_dir.exists()


def test_checkpoint_missing_one_block_is_refused(run_main, tmp_path):
  prefix = write_upstream_checkpoint(
      str(tmp_path / 'ckpt' / 'model.ckpt'), _port(**_TINY),
      drop=('/blocks_5/',))
  code, stderr, model_dir = run_main(prefix + '.index', extra=_TINY_FLAGS)
  line = _error_line(stderr)
  assert code == 1
  assert 'model variables are not in the file (first: blocks_5_' in line
  assert 'efficientnetv2-b0/blocks_5/' in line
  assert not model_dir.exists()


# -- the study's path: FashionMNISTFt from pretrained weights ------------------
def _tiny_keras_b0(path):
  """keras.applications' builder at the tiny config's width and depth."""
  model = keras_efficientnet_v2.EfficientNetV2(
      0.25, 0.25, 224, name='efficientnetv2-b0', weights=None,
      input_shape=(32, 32, 3), classifier_activation=None)
  _save(_randomize_bn_statistics(model), path)
  return model.get_layer('stem_conv').kernel.numpy()


@pytest.mark.parametrize('weights_format', ['keras', 'upstream'])
def test_fashion_mnist_ft_fine_tunes_from_1000_class_weights(
    tiny_config, tmp_path, capsys, weights_format):
  # Keras' builder has a 1280-wide head conv at any width; the tiny config's
  # feature_size is set to match.
  if weights_format == 'keras':
    path = str(tmp_path / 'efficientnetv2-b0.h5')
    source_stem = _tiny_keras_b0(path)
  else:
    source = _randomize_bn_statistics(_port(**dict(_TINY, feature_size=1280)))
    path = write_upstream_checkpoint(str(tmp_path / 'b0' / 'model.ckpt'),
                                     source, source)
    source_stem = source.get_layer('stem_conv').kernel.numpy()
  config = tiny_config(f'model.feature_size=1280,train.stages=0,'
                       f'train.epochs=0.002,train.ft_init_ckpt={path}')
  model_dir = tmp_path / 'run'
  result = main.run('train', config, str(model_dir),
                    strategy=tf.distribute.OneDeviceStrategy('/cpu:0'))
  stdout = capsys.readouterr().out
  assert f'initialized efficientnetv2-b0 from {path}' in stdout
  assert ('skipped head_dense/kernel, head_dense/bias: the file has 1000 '
          'classes, this model 10') in stdout
  assert result['global_step'] == result['total_steps'] > 0
  assert result['eval/num_examples'] == config.data.splits.eval.num_images
  # Training started from the file: a few steps later the stem still
  # carries its values (a random start would be uncorrelated).
  export = pretrained.read_weights(str(model_dir / 'export' /
                                       'ema.weights.h5'))
  trained_stem = export.tensors['stem_conv/vars/0']()
  assert np.corrcoef(trained_stem.ravel(), source_stem.ravel())[0, 1] > 0.9
