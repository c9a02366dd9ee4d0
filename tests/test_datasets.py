"""Input pipelines: real Fashion-MNIST offline, generated data elsewhere."""
import gzip
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from automl_effnetv2 import augment_spec
from automl_effnetv2 import autoaugment
from automl_effnetv2 import datasets
from automl_effnetv2 import hparams
from automl_effnetv2 import local_data
from automl_effnetv2 import progressive
from automl_effnetv2 import run_config

# Every registered input read through tfds (the rest read TFRecords).
TFDS_DATASETS = sorted(name for name, cls in datasets.dataset_classes().items()
                       if cls.cfg.tfds_name)
DATASET_CONFIGS = hparams.registered_names('ds:')


# -- Fashion-MNIST, real files -------------------------------------------------
@pytest.mark.parametrize('split', ['train', 'minival', 'eval'])
def test_fashion_mnist_registered_split_sizes_are_what_the_files_hold(
    fashion_mnist_tfds_dir, split):
  cls = datasets.get_dataset_class('fashion_mnist')
  inp = cls(is_training=False, image_size=32, split=split,
            tfds_data_dir=fashion_mnist_tfds_dir)
  labels = []
  for _, onehot in inp.make_source_dataset(0, 1).batch(10000):
    assert onehot.shape[-1] == cls.cfg.num_classes
    labels.append(np.argmax(onehot.numpy(), axis=1))
  labels = np.concatenate(labels)
  assert len(labels) == cls.cfg.splits[split].num_images
  # Fashion-MNIST's classes are balanced in both of its files.
  counts = np.bincount(labels, minlength=cls.cfg.num_classes)
  np.testing.assert_array_equal(counts, [len(labels) // len(counts)] *
                                len(counts))


def test_fashion_mnist_raw_images_are_28x28_gray(fashion_mnist_tfds_dir):
  inp = datasets.FashionMNISTInput(is_training=False, image_size=32,
                                   tfds_data_dir=fashion_mnist_tfds_dir)
  image, _ = next(iter(inp.make_source_dataset(0, 1)))
  assert image.shape == (28, 28, 1) and image.dtype == tf.uint8


# A 1K-example shuffle buffer: filling upstream's 16K one reads and decodes
# 16K images before the first batch, seconds that these tests do not test
# (test_shuffle_buffer_from_the_config checks the buffer sizes).
_SMALL_BUFFER_K = 1


@pytest.mark.parametrize('size', [32, 64, 128])
@pytest.mark.parametrize('is_training', [True, False])
def test_fashion_mnist_pipeline_shapes_and_ranges(fashion_mnist_tfds_dir,
                                                  size, is_training):
  inp = datasets.FashionMNISTInput(
      is_training=is_training, image_size=size,
      augment=augment_spec.AugmentSpec(policy='randaug', magnitude=10),
      mixup_alpha=0.2, cutmix_alpha=0.2,
      tfds_data_dir=fashion_mnist_tfds_dir, shuffle_size_k=_SMALL_BUFFER_K)
  images, labels = next(iter(inp.dataset(16)))
  assert images.shape == (16, size, size, 3)
  assert labels.shape == (16, 10)
  images = images.numpy()
  assert images.min() >= -1.0 and images.max() <= 1.0
  np.testing.assert_allclose(labels.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_resumed_stream_equals_uninterrupted_stream(fashion_mnist_tfds_dir):
  def make():
    return datasets.FashionMNISTInput(
        is_training=True, image_size=32,
        augment=augment_spec.AugmentSpec(policy='randaug', magnitude=10),
        mixup_alpha=0.3, cutmix_alpha=0.3, seed=5,
        tfds_data_dir=fashion_mnist_tfds_dir, shuffle_size_k=_SMALL_BUFFER_K)
  uninterrupted = [b for b in make().dataset(8).take(5)]
  resumed = [b for b in make().dataset(8, start_step=3).take(2)]
  for (x1, y1), (x2, y2) in zip(uninterrupted[3:], resumed):
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())
  assert not np.array_equal(uninterrupted[0][0], uninterrupted[1][0])


def test_fixed_parallelism_gives_the_autotuned_stream(fashion_mnist_tfds_dir):
  def make(parallel_calls):
    return datasets.FashionMNISTInput(
        is_training=True, image_size=32, augment=augment_spec.AugmentSpec(policy='ft_randaug'),
        mixup_alpha=0.2,
        seed=3, tfds_data_dir=fashion_mnist_tfds_dir,
        parallel_calls=parallel_calls, shuffle_size_k=_SMALL_BUFFER_K)
  autotuned = make(None).dataset(8)
  fixed = make(2).dataset(8)
  assert autotuned.options().autotune.enabled
  assert not fixed.options().autotune.enabled
  for (x1, y1), (x2, y2) in zip(autotuned.take(3), fixed.take(3)):
    np.testing.assert_array_equal(x1.numpy(), x2.numpy())
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())


def test_registered_fashion_mnist_run_grows_images_and_regularization():
  config = run_config.build_config('efficientnetv2-b0', 'fashion_mnist')
  steps = progressive.train_steps(config.train.epochs,
                                  config.data.splits.train.num_images,
                                  config.train.batch_size)
  stages = progressive.stage_schedule(config, steps, config.train.isize)
  sizes = [s.image_size for s in stages]
  magnitudes = [s.ram for s in stages]
  assert len(stages) == config.train.stages > 1
  # Each stage trains on larger images with stronger RandAugment, ending
  # at the eval size and the configured magnitude after the last step.
  assert sizes == sorted(set(sizes)) and sizes[-1] == config.eval.isize
  assert magnitudes == sorted(set(magnitudes))
  assert magnitudes[-1] == config.data.ram
  assert stages[-1].max_steps == steps


@pytest.mark.parametrize('magnitude', [0, 5, 10])
def test_registered_fashion_mnist_ops_keep_the_black_background(magnitude):
  # Fashion-MNIST images are objects on black: the default draws no op
  # that inverts the image or grays its background, and fills with black.
  config = run_config.build_config('efficientnetv2-b0', 'fashion_mnist')
  black = tf.zeros([28, 28, 3], tf.uint8)
  spec = augment_spec.AugmentSpec.from_config(config.data)
  for name in spec.ops:
    op = autoaugment.make_op(name, magnitude, *spec.constants('randaug'),
                             spec.fill_color)
    for seed in range(3):
      out = op(black, tf.constant([seed, 1], tf.int64)).numpy()
      assert not out.any(), (name, magnitude, out.max())


def test_fashion_mnist_recipe_draws_upstreams_ops_less_the_inverting_ones():
  config = run_config.build_config('efficientnetv2-b0', 'fashion_mnist')
  # In upstream's order: an op's index decides which draws pick it.
  assert config.data.ra_ops == [
      op for op in autoaugment.RANDAUGMENT_OPS
      if op not in ('Invert', 'Solarize', 'SolarizeAdd')]
  assert config.data.aug_fill == 0  # The images' black background.


def test_eval_reads_num_images_of_the_split_across_pipelines(
    fashion_mnist_tfds_dir):
  # Upstream's data.splits.eval.num_images sets how much is evaluated; the
  # partial last batch counts, and two pipelines share the images.
  def labels_read(num_images, contexts):
    inp = datasets.FashionMNISTInput(
        is_training=False, image_size=32, num_images=num_images,
        tfds_data_dir=fashion_mnist_tfds_dir)
    return [np.argmax(y, -1) for context in contexts
            for _, y in inp.dataset(400, context).as_numpy_iterator()]

  one = labels_read(1001, [None])
  assert [len(b) for b in one] == [400, 400, 201]
  two = labels_read(1001, [tf.distribute.InputContext(2, i, 2)
                           for i in range(2)])
  assert sum(len(b) for b in two) == 1001
  whole = labels_read(None, [None])
  assert sum(len(b) for b in whole) == 10000
  np.testing.assert_array_equal(np.concatenate(one),
                                np.concatenate(whole)[:1001])


def _settings(config, size):
  """A pipeline at `size` with the config's augmentation and mixing."""
  data = config.data
  return progressive.StageSettings(
      size, augment_spec.AugmentSpec.from_config(data),
      mixup_alpha=data.mixup_alpha, cutmix_alpha=data.cutmix_alpha)


def test_shuffle_buffer_from_the_config(fashion_mnist_tfds_dir):
  def first_labels(extra):
    config = run_config.build_config(
        'efficientnetv2-b0', 'fashion_mnist',
        'data.mixup_alpha=0,data.cutmix_alpha=0,'
        f'data.tfds_data_dir={fashion_mnist_tfds_dir}' + extra)
    inp = datasets.build_dataset_input(True, _settings(config, 32), config)
    _, labels = next(iter(inp.dataset(32)))
    return inp, np.argmax(labels.numpy(), -1)

  # A buffer of one example shuffles nothing: the stream is the split's
  # own order. The default buffer (upstream's 16K) reorders it.
  unshuffled, labels = first_labels(',data.shuffle_size_k=0.0009765625')
  assert unshuffled.shuffle_buffer_size() == 1
  source = unshuffled.make_source_dataset(0, 1).take(32)
  in_order = [int(np.argmax(label)) for _, label in source.as_numpy_iterator()]
  np.testing.assert_array_equal(labels, in_order)
  default, labels = first_labels('')
  assert default.shuffle_buffer_size() == 16 * 1024
  assert list(labels) != in_order
  with pytest.raises(hparams.ConfigError, match='shuffle_size_k'):
    run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                            'data.shuffle_size_k=0')
  with pytest.raises(datasets.DatasetError, match='shuffle_size_k'):
    datasets.FashionMNISTInput(is_training=True, image_size=32,
                               shuffle_size_k=-1)


def test_parallel_calls_from_the_config_and_bad_values():
  default = run_config.build_config('efficientnetv2-b0', 'fashion_mnist', '')
  assert default.data.parallel_calls is None  # Upstream's AUTOTUNE.
  inp = datasets.build_dataset_input(True, _settings(default, 32), default)
  assert inp.num_parallel_calls == tf.data.AUTOTUNE
  fixed = run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                            'data.parallel_calls=3')
  inp = datasets.build_dataset_input(True, _settings(fixed, 32), fixed)
  assert inp.num_parallel_calls == 3
  with pytest.raises(datasets.DatasetError, match='parallel_calls'):
    datasets.FashionMNISTInput(is_training=True, image_size=32,
                               parallel_calls=0)
  # From the command line it is one config error, before anything runs.
  with pytest.raises(hparams.ConfigError, match='data.parallel_calls=0'):
    run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                            'data.parallel_calls=0')


def test_two_input_pipelines_read_disjoint_shards(fashion_mnist_tfds_dir):
  inp = datasets.FashionMNISTInput(is_training=False, image_size=32,
                                   tfds_data_dir=fashion_mnist_tfds_dir)
  shard0 = inp.make_source_dataset(0, 2).take(50)
  shard1 = inp.make_source_dataset(1, 2).take(50)
  images0 = {x.numpy().tobytes() for x, _ in shard0}
  images1 = {x.numpy().tobytes() for x, _ in shard1}
  assert not images0 & images1


# -- Fashion-MNIST, damaged or missing files -----------------------------------
@pytest.fixture
def fashion_copy(tmp_path):
  folder = tmp_path / 'fashion'
  shutil.copytree(local_data.DEBIAN_FASHION_MNIST_DIR, folder)
  return folder


def _assert_refused_and_nothing_prepared(folder, tmp_path, pattern):
  tfds_dir = str(tmp_path / 'tfds')
  with pytest.raises(local_data.DataFilesError,
                     match=pattern) as err:
    local_data.prepare_fashion_mnist(str(folder), tfds_dir)
  assert 'apt-get install -y dataset-fashion-mnist' in str(err.value)
  assert not tfds.builder('fashion_mnist', data_dir=tfds_dir).is_prepared()


def test_missing_folder_says_what_to_install(tmp_path):
  _assert_refused_and_nothing_prepared(tmp_path / 'nowhere', tmp_path,
                                       'does not exist')


def test_missing_file_is_named(fashion_copy, tmp_path):
  os.remove(fashion_copy / 't10k-labels-idx1-ubyte.gz')
  _assert_refused_and_nothing_prepared(
      fashion_copy, tmp_path, 't10k-labels-idx1-ubyte.gz is missing')


def test_truncated_file_is_named(fashion_copy, tmp_path):
  path = fashion_copy / 'train-images-idx3-ubyte.gz'
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  _assert_refused_and_nothing_prepared(
      fashion_copy, tmp_path, 'train-images-idx3-ubyte.gz is truncated')


def test_changed_bytes_fail_the_checksum(fashion_copy, tmp_path):
  path = fashion_copy / 'train-labels-idx1-ubyte.gz'
  data = bytearray(gzip.decompress(path.read_bytes()))
  data[100] = (data[100] + 1) % 10
  path.write_bytes(gzip.compress(bytes(data)))
  _assert_refused_and_nothing_prepared(fashion_copy, tmp_path, 'md5')


def test_wrong_count_is_reported(fashion_copy, tmp_path):
  path = fashion_copy / 't10k-labels-idx1-ubyte.gz'
  data = bytearray(gzip.decompress(path.read_bytes()))
  data[4:8] = (9999).to_bytes(4, 'big')
  path.write_bytes(gzip.compress(bytes(data)))
  _assert_refused_and_nothing_prepared(fashion_copy, tmp_path,
                                       'holds 9999 items, expected 10000')


# -- the prepared copy stays tied to the files it came from ---------------------
@pytest.fixture
def prepared_copy(fashion_mnist_tfds_dir, tmp_path):
  """A prepared tfds copy of its own, plus the folder it is checked against."""
  tfds_dir = tmp_path / 'tfds'
  shutil.copytree(fashion_mnist_tfds_dir, tfds_dir)
  folder = tmp_path / 'fashion'
  shutil.copytree(local_data.DEBIAN_FASHION_MNIST_DIR, folder)
  builder = local_data.prepare_fashion_mnist(str(folder), str(tfds_dir))
  return str(tfds_dir), folder, builder.data_dir


def _recorded_source(prepared_dir):
  with open(os.path.join(prepared_dir, local_data.SOURCE_RECORD)) as f:
    return json.load(f)


def test_prepared_copy_records_its_source_files(prepared_copy):
  _, folder, prepared_dir = prepared_copy
  record = _recorded_source(prepared_dir)
  assert record['folder'] == os.path.realpath(folder)
  name = 'train-images-idx3-ubyte.gz'
  assert record['files'][name][0] == os.path.getsize(folder / name)
  assert record['md5'][name] == local_data.FASHION_MNIST_FILES[name][0]


def test_prepared_copy_refuses_a_missing_source_folder(prepared_copy):
  tfds_dir, folder, _ = prepared_copy
  shutil.rmtree(folder)
  with pytest.raises(local_data.DataFilesError, match='does not exist'):
    local_data.prepare_fashion_mnist(str(folder), tfds_dir)


def test_prepared_copy_refuses_altered_source_files(prepared_copy):
  tfds_dir, folder, _ = prepared_copy
  path = folder / 'train-labels-idx1-ubyte.gz'
  data = bytearray(gzip.decompress(path.read_bytes()))
  data[100] = (data[100] + 1) % 10
  path.write_bytes(gzip.compress(bytes(data)))
  with pytest.raises(local_data.DataFilesError,
                     match='train-labels-idx1-ubyte.gz has md5'):
    local_data.prepare_fashion_mnist(str(folder), tfds_dir)


def test_touched_source_files_are_checked_again_and_accepted(prepared_copy):
  tfds_dir, folder, prepared_dir = prepared_copy
  path = folder / 't10k-labels-idx1-ubyte.gz'
  os.utime(path, ns=(1_000_000_000, 1_000_000_000))
  local_data.prepare_fashion_mnist(str(folder), tfds_dir)
  assert _recorded_source(prepared_dir)['files'][path.name][1] == (
      1_000_000_000)


def test_prepared_copy_from_other_files_is_refused(prepared_copy):
  tfds_dir, folder, prepared_dir = prepared_copy
  record = _recorded_source(prepared_dir)
  record['folder'] = '/elsewhere'
  record['md5']['train-labels-idx1-ubyte.gz'] = '0' * 32
  with open(os.path.join(prepared_dir, local_data.SOURCE_RECORD), 'w') as f:
    json.dump(record, f)
  with pytest.raises(local_data.DataFilesError,
                     match='was made from other files'):
    local_data.prepare_fashion_mnist(str(folder), tfds_dir)


# -- generated data for the other tfds datasets ------------------------------
@pytest.mark.parametrize('name', TFDS_DATASETS)
def test_tfds_datasets_build_train_and_eval_with_mixing(name):
  cls = datasets.get_dataset_class(name)
  # Fashion-MNIST would read the local files; 'tfds' takes tfds' path.
  options = dict(data_dir='tfds') if name == 'fashion_mnist' else {}
  with tfds.testing.mock_data(num_examples=16):
    train = cls(is_training=True, image_size=32,
                augment=augment_spec.AugmentSpec(policy='randaug'),
                mixup_alpha=0.2, cutmix_alpha=0.2, **options)
    images, labels = next(iter(train.dataset(8)))
    assert images.shape == (8, 32, 32, 3)
    assert labels.shape == (8, cls.cfg.num_classes)
    # Mixed labels: some rows hold two classes.
    assert (labels.numpy() > 0).sum(axis=1).max() == 2
    evaluation = cls(is_training=False, image_size=32, **options)
    images, _ = next(iter(evaluation.dataset(8)))
    assert images.shape == (8, 32, 32, 3)


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(datasets.DatasetError) as err:
    datasets.get_dataset_class('fashionmnist')
  assert 'fashion_mnist' in str(err.value) and 'cifar10' in str(err.value)


# -- ImageNet TFRecords ------------------------------------------------------
def _write_imagenet_records(folder, prefix, num_files, label_of):
  rng = np.random.default_rng(0)
  for f in range(num_files):
    path = os.path.join(folder, f'{prefix}-{f:05d}-of-{num_files:05d}')
    with tf.io.TFRecordWriter(path) as writer:
      for _ in range(2):
        image = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        feature = {
            'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[tf.io.encode_jpeg(image).numpy()])),
            'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(
                value=[label_of(f)])),
        }
        writer.write(tf.train.Example(features=tf.train.Features(
            feature=feature)).SerializeToString())


def test_imagenet_tfrecords_use_upstream_slices_and_1_based_labels(tmp_path):
  # 22 train files: files 0-19 are minival, 20-21 train. Label = file + 1.
  _write_imagenet_records(str(tmp_path), 'train', 22, lambda f: f + 1)
  train = datasets.ImageNetInput(is_training=False, image_size=32,
                                 data_dir=str(tmp_path), split='train')
  labels = {int(np.argmax(y)) for _, y in train.make_source_dataset(0, 1)}
  assert labels == {20, 21}
  minival = datasets.ImageNetInput(is_training=False, image_size=32,
                                   data_dir=str(tmp_path), split='minival')
  labels = {int(np.argmax(y)) for _, y in minival.make_source_dataset(0, 1)}
  assert labels == set(range(20))
  training = datasets.ImageNetInput(is_training=True, image_size=32,
                                    data_dir=str(tmp_path),
                                    augment=augment_spec.AugmentSpec(
                                        policy='autoaug'),
                                    mixup_alpha=0.2)
  images, labels = next(iter(training.dataset(4)))
  assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 1000)


def test_imagenet_without_data_dir_is_a_clear_error():
  inp = datasets.ImageNetInput(is_training=True, image_size=32)
  with pytest.raises(datasets.DatasetError, match='--data_dir'):
    inp.dataset(4)


def test_imagenet_null_data_dir_gives_fake_images():
  inp = datasets.ImageNetInput(is_training=True, image_size=32,
                               data_dir='null')
  images, labels = next(iter(inp.dataset(4)))
  assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 1000)


def test_imagenet21k_multi_hot_labels(tmp_path):
  path = str(tmp_path / 'imagenet21k-00000')
  with tf.io.TFRecordWriter(path) as writer:
    image = tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)).numpy()
    example = tf.train.Example(features=tf.train.Features(feature={
        'id': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'x'])),
        'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
        'labels': tf.train.Feature(int64_list=tf.train.Int64List(
            value=[3, 17, 21000])),
    }))
    writer.write(example.SerializeToString())
  inp = datasets.ImageNet21kInput(is_training=False, image_size=32,
                                  data_dir=str(tmp_path), split='eval')
  _, label = next(iter(inp.make_source_dataset(0, 1)))
  assert set(np.nonzero(label.numpy())[0]) == {3, 17, 21000}


# -- mixing ------------------------------------------------------------------
def _constant_batch(batch=8, size=16, classes=8):
  images = tf.reshape(tf.range(batch, dtype=tf.float32), [batch, 1, 1, 1])
  images = tf.tile(images, [1, size, size, 3])
  labels = tf.one_hot(tf.range(batch), classes)
  return images, labels


def test_mixup_weights_are_at_least_one_half_and_match_images():
  images, labels = _constant_batch()
  mixed, mixed_labels = datasets.mixup(images, labels, 0.4,
                                       tf.constant([1, 2], tf.int64))
  weights = mixed_labels.numpy()[np.arange(8), np.arange(8)]
  assert (weights >= 0.5 - 1e-6).all()
  partner = mixed_labels.numpy()[np.arange(8), np.arange(8)[::-1]]
  np.testing.assert_allclose(weights + partner, 1.0, rtol=1e-6)
  expected = np.arange(8) * weights + np.arange(8)[::-1] * (1 - weights)
  np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], expected, rtol=1e-5)


def test_cutmix_label_weight_is_each_examples_real_box_area():
  images, labels = _constant_batch()
  mixed, mixed_labels = datasets.cutmix(images, labels, 1.0,
                                        tf.constant([3, 4], tf.int64))
  mixed = mixed.numpy()[..., 0]
  for i in range(8):
    j = 7 - i
    if i == j:
      continue
    pasted = np.mean(mixed[i] == j)
    assert mixed_labels.numpy()[i, j] == pytest.approx(pasted, abs=1e-6)
    assert mixed_labels.numpy()[i, i] == pytest.approx(1 - pasted, abs=1e-6)


def test_both_mixes_split_the_batch_in_halves():
  images, labels = _constant_batch()
  mixed, _ = datasets.mix_batch(images, labels, 0.4, 1.0,
                                tf.constant([5, 6], tf.int64))
  mixed = mixed.numpy()[..., 0]
  # Mixup halves are uniform images; cutmix halves hold two exact values.
  for i in range(4):
    assert np.ptp(mixed[i]) < 1e-5
  for i in range(4, 8):
    assert set(np.unique(mixed[i])).issubset({float(i), float(7 - (i - 4))})


@pytest.mark.parametrize('name', DATASET_CONFIGS)
def test_every_dataset_config_assembles_with_its_datasets_facts(name):
  cfg = datasets.get_dataset_config(name)
  facts = datasets.get_dataset_class(cfg.data.ds_name).cfg
  assert cfg.data.num_classes == facts.num_classes
  assert cfg.data.splits.as_dict() == facts.splits.as_dict()
  # Over the base config, as main.py assembles it: no unknown keys, and the
  # model's head is sized for the dataset.
  config = run_config.build_config('efficientnetv2-b0', name)
  assert config.model.num_classes == facts.num_classes


def test_ra_ops_and_fill_from_the_config_reach_the_pipeline(
    fashion_mnist_tfds_dir):
  # Only Invert, on the ft path: every training image's black corner
  # becomes white (+1 in [-1, 1]); eval images keep it black (-1).
  config = run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                             'data.ra_ops=Invert,data.aug_fill=0')
  assert config.data.ra_ops == 'Invert' and config.data.aug_fill == 0
  config.data.tfds_data_dir = fashion_mnist_tfds_dir
  train = datasets.build_dataset_input(True, _settings(config, 32), config)
  images, _ = next(iter(train.dataset(16)))
  np.testing.assert_allclose(images.numpy()[:, 0, 0, :], 1.0)
  evaluation = datasets.build_dataset_input(False, _settings(config, 32),
                                            config)
  images, _ = next(iter(evaluation.dataset(16)))
  np.testing.assert_allclose(images.numpy()[:, 0, 0, :], -1.0)
  listed = run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                             'data.ra_ops=Rotate|Cutout')
  assert listed.data.ra_ops == ['Rotate', 'Cutout']


def test_bad_ra_ops_or_fill_fail_when_the_config_is_built():
  with pytest.raises(hparams.ConfigError, match='valid: AutoContrast'):
    run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                            'data.ra_ops=Rotate|Spin')
  with pytest.raises(hparams.ConfigError, match='aug_fill'):
    run_config.build_config('efficientnetv2-b0', 'fashion_mnist',
                            'data.aug_fill=-1')


# -- adding a dataset as the README says ----------------------------------------
class _Shapes(datasets.CIFAR10Input):
  """Three classes of 20x20 colour images: dark, mid and bright squares."""

  class_names = ('dark', 'mid', 'bright')
  cfg = hparams.Config(datasets.CIFAR10Input.cfg)
  cfg.update(dict(num_classes=3, tfds_name='shapes', splits=dict(
      train=dict(num_images=96, tfds_split='train'),
      eval=dict(num_images=48, tfds_split='test'))))

  def load_tfds(self):
    count = self.split_info['num_images']
    labels = np.arange(count) % 3
    noise = np.random.default_rng(count).integers(0, 40, (count, 20, 20, 3))
    images = (labels[:, None, None, None] * 100 + noise).astype(np.uint8)
    return tf.data.Dataset.from_tensor_slices(
        dict(image=images, label=labels.astype(np.int64)))


@pytest.fixture
def registries(monkeypatch):
  """The dataset and training-config tables, restored after the test."""
  monkeypatch.setattr(datasets, '_INPUTS', dict(datasets._INPUTS))
  table = hparams._registry('ds:')
  monkeypatch.setattr(table, '_objects', dict(table._objects))


def test_a_dataset_added_as_the_readme_says_trains_and_evaluates(
    registries, tmp_path):
  from automl_effnetv2 import main
  from conftest import one_device
  recipe = tmp_path / 'shapes.yaml'
  recipe.write_text(
      'data:\n  ds_name: shapes\n  augname: ft_plain\n  mixup_alpha: 0\n'
      '  cutmix_alpha: 0\ntrain:\n  epochs: 3\n  batch_size: 16\n'
      '  stages: 2\n  isize: 24\n  lr_base: 0.1\n  optimizer: momentum\n'
      '  lr_warmup_epoch: 0\n  min_steps: 0\neval:\n  isize: 24\n'
      '  batch_size: 48\n')
  datasets.register_input('shapes', recipe=str(recipe))(_Shapes)

  assert datasets.get_dataset_class('shapes') is _Shapes
  config = main.build_config(
      'efficientnetv2-b0', 'shapes',
      'model.width_coefficient=0.25,model.depth_coefficient=0.25,'
      'model.feature_size=64,data.ibase=16,runtime.save_checkpoints_steps=9')
  assert (config.data.num_classes, config.train.isize) == (3, 24)
  result = main.run('traineval', config, str(tmp_path / 'run'),
                    strategy=one_device())
  assert result['global_step'] == 18  # 3 epochs of 96 images, 16 a batch.
  assert result['eval/acc_top1'] > 0.9  # Chance is 1/3; brightness tells the classes.


def test_a_recipe_for_another_dataset_is_refused(registries, tmp_path):
  recipe = tmp_path / 'other.yaml'
  recipe.write_text('data:\n  ds_name: cifar10\n')
  with pytest.raises(ValueError, match="data.ds_name='cifar10', not 'shapes'"):
    datasets.register_input('shapes', recipe=str(recipe))(_Shapes)
