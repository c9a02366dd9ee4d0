"""Input pipelines for every upstream dataset, and the training-config registry.

Each Input class holds its dataset's facts in `cfg` (classes, split sizes,
where the examples come from) and builds `tf.data` pipelines from a
`tf.distribute.InputContext`:

  source (fixed order, sharded per input pipeline)
  -> cache -> seeded shuffle -> repeat -> enumerate -> skip(start)
  -> preprocess (stateless seed = f(run seed, example index)) -> batch
  -> mixup / cutmix (seed = f(run seed, batch index)) -> prefetch

Every random draw is a function of the run seed and the example's position in
the stream, so a run resumed at step n reads exactly the batches an
uninterrupted run reads from step n on.

Differences from upstream (docs/deviations.md): mixup and cutmix apply to
every training pipeline (upstream silently skipped them for tfds datasets);
cutmix weights each example's labels by its own box area (upstream used the
batch mean); `data_dir` reaches tfds; data_dir=None for TFRecord datasets is
an error ('null' still gives upstream's fake zero images).
"""
import copy
import functools
import os
from typing import Optional

from absl import logging
import tensorflow as tf

from automl_effnetv2 import augment_spec
from automl_effnetv2 import hparams
from automl_effnetv2 import local_data
from automl_effnetv2 import preprocessing
from automl_effnetv2 import recipes
from automl_effnetv2 import registry
from automl_effnetv2 import train_errors

ds_register = functools.partial(hparams.register, prefix='ds:')
AUTOTUNE = tf.data.AUTOTUNE

# data.ds_name -> Input class, in the order registered (register_input).
_INPUTS = {}


def register_input(ds_name: str, recipe: Optional[str] = None):
  """Class decorator: `data.ds_name=<ds_name>` selects this Input class.

  With `recipe`, the same line also registers the training config
  `--dataset_cfg=<ds_name>` from automl_effnetv2/recipes/<recipe>.yaml (or
  a path ending in .yaml), so that adding a dataset is its Input class,
  this one line and its recipe (README, "Adding a dataset").
  """
  def add(cls):
    _INPUTS[ds_name] = cls
    if recipe:
      cfg = recipes.load(recipe)
      if cfg.get('data', {}).get('ds_name', ds_name) != ds_name:
        raise ValueError(f'recipe {recipe!r} trains on data.ds_name='
                         f'{cfg.data.ds_name!r}, not {ds_name!r}')
      cfg.update(dict(data=dict(ds_name=ds_name)))
      training_config = type(ds_name, (), dict(
          cfg=cfg, __doc__=f'The training values of recipe {recipe!r} on '
          f'{cls.__name__}.'))
      ds_register(training_config, name=ds_name)
    return cls
  return add


# Input.class_names for ImageNet's 1000 classes: Keras' class index, which
# Keras downloads once (labels.imagenet_class_names).
KERAS_IMAGENET_CLASSES = 'keras:imagenet_class_index'


# Every Input's errors are of this one family (a dataset's own errors
# subclass it); main.py prints any of them as one line.
DatasetError = train_errors.DatasetError


def _parse_slice(text) -> slice:
  """'20:' -> slice(20, None); None or '' -> everything."""
  if not text:
    return slice(None)
  start, _, stop = str(text).partition(':')
  return slice(int(start) if start else None, int(stop) if stop else None)


def _pipeline_share(count: int, pipeline_id: int, num_pipelines: int) -> int:
  """How many of `count` examples input pipeline `pipeline_id` reads."""
  return count // num_pipelines + (1 if pipeline_id < count % num_pipelines
                                   else 0)


# -- mixing ------------------------------------------------------------------
def sample_beta(shape, alpha, seed):
  """Beta(alpha, alpha) as G1 / (G1 + G2) with stateless gamma draws."""
  seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  g1 = tf.random.stateless_gamma(shape, seed1, alpha)
  g2 = tf.random.stateless_gamma(shape, seed2, alpha)
  return g1 / tf.maximum(g1 + g2, 1e-12)


def mixup(images, labels, alpha, seed):
  """Per-example weight w ~ Beta(a, a), w = max(w, 1 - w), mixed with the
  reversed batch (upstream's mixup)."""
  batch = tf.shape(images)[0]
  weight = sample_beta([batch, 1], alpha, seed)
  weight = tf.maximum(weight, 1.0 - weight)
  image_weight = tf.cast(tf.reshape(weight, [batch, 1, 1, 1]), images.dtype)
  images = images * image_weight + images[::-1] * (1.0 - image_weight)
  label_weight = tf.cast(weight, labels.dtype)
  labels = labels * label_weight + labels[::-1] * (1.0 - label_weight)
  return images, labels


def cutmix_masks(batch, height, width, alpha, seed):
  """One box per example: centre uniform, side sqrt(1 - Beta(a, a)) times the
  image side, clipped at the borders. Returns float [B, H, W, 1] masks."""
  seed_y, seed_x, seed_area = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  center_y = tf.random.stateless_uniform([batch], seed_y, 0, height, tf.int32)
  center_x = tf.random.stateless_uniform([batch], seed_x, 0, width, tf.int32)
  ratio = tf.sqrt(1.0 - sample_beta([batch], alpha, seed_area))
  box_h = tf.cast(ratio * tf.cast(height, tf.float32), tf.int32)
  box_w = tf.cast(ratio * tf.cast(width, tf.float32), tf.int32)
  y1 = tf.clip_by_value(center_y - box_h // 2, 0, height)[:, None, None]
  y2 = tf.clip_by_value(center_y + box_h // 2, 0, height)[:, None, None]
  x1 = tf.clip_by_value(center_x - box_w // 2, 0, width)[:, None, None]
  x2 = tf.clip_by_value(center_x + box_w // 2, 0, width)[:, None, None]
  rows = tf.range(height)[None, :, None]
  cols = tf.range(width)[None, None, :]
  inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
  return tf.cast(inside, tf.float32)[..., None]


def cutmix(images, labels, alpha, seed):
  """Pastes a box from the reversed batch; labels weighted by the box's real
  (clipped) area, per example."""
  shape = tf.shape(images)
  masks = cutmix_masks(shape[0], shape[1], shape[2], alpha, seed)
  area = tf.reduce_mean(masks, axis=[1, 2, 3])[:, None]
  masks = tf.cast(masks, images.dtype)
  images = (1.0 - masks) * images + masks * images[::-1]
  area = tf.cast(area, labels.dtype)
  labels = (1.0 - area) * labels + area * labels[::-1]
  return images, labels


# Plain TensorFlow ops (Python branches on settings only): tf.data traces it
# as written, skipping autograph's source conversion (seconds per process).
@tf.autograph.experimental.do_not_convert
def mix_batch(images, labels, mixup_alpha, cutmix_alpha, seed):
  """Mixup, cutmix, or both on halves of the batch (upstream's `mixing`)."""
  if mixup_alpha and cutmix_alpha:
    half = tf.shape(images)[0] // 2
    seed1, seed2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    img1, lab1 = mixup(images[:half], labels[:half], mixup_alpha, seed1)
    img2, lab2 = cutmix(images[half:], labels[half:], cutmix_alpha, seed2)
    return tf.concat([img1, img2], 0), tf.concat([lab1, lab2], 0)
  if mixup_alpha:
    return mixup(images, labels, mixup_alpha, seed)
  if cutmix_alpha:
    return cutmix(images, labels, cutmix_alpha, seed)
  return images, labels


# -- inputs -------------------------------------------------------------------
@register_input('imagenet')
class ImageNetInput:
  """ImageNet from TFRecord files (image/encoded, 1-based image/class/label)."""

  cfg = hparams.Config(
      data_dir=None,
      num_classes=1000,
      multiclass=False,
      tfds_name=None,
      tfds_split=None,
      splits=dict(
          train=dict(num_images=1_256_144, files='train*', slice='20:'),
          minival=dict(num_images=25_021, files='train*', slice=':20'),
          eval=dict(num_images=50_000, files='val*', slice=':'),
          trainval=dict(num_images=1_281_167, files='train*', slice=':'),
      ),
  )
  # Upstream's shuffle buffer (shuffle_size_k = 128): 131,072 examples.
  shuffle_buffer = 128 * 1024
  # The names of the label indices, in order (a tuple), for printed
  # predictions and exported models; KERAS_IMAGENET_CLASSES; or None.
  class_names = KERAS_IMAGENET_CLASSES

  def __init__(self, is_training: bool, image_size: int, image_dtype=None,
               data_dir: Optional[str] = None, split: Optional[str] = None,
               cache: bool = False,
               augment: augment_spec.AugmentSpec = (
                   augment_spec.NO_AUGMENTATION),
               mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
               seed: int = 0, tfds_data_dir: Optional[str] = None,
               parallel_calls: Optional[int] = None,
               shuffle_size_k: Optional[float] = None,
               num_images: Optional[int] = None, stream: int = 0):
    if image_size < 1:
      raise ValueError(f'image_size must be positive, got {image_size}')
    self.is_training = is_training
    self.image_size = int(image_size)
    self.image_dtype = image_dtype or tf.float32
    self.data_dir = data_dir or self.cfg.data_dir
    self.split = split or ('train' if is_training else 'eval')
    registry.check_name(f'{type(self).__name__} split', self.split,
                        self.cfg.splits, DatasetError)
    self.cache = cache
    self.augment = augment  # Checked when it was built.
    self.mixup_alpha = float(mixup_alpha or 0.0)
    self.cutmix_alpha = float(cutmix_alpha or 0.0)
    # The run config's split size (upstream counts steps from it); it sets
    # how many fake examples data_dir=null yields.
    self._num_images = num_images
    self.seed = int(seed)
    # Which of a run's training streams this is: 0, the run's one stream;
    # k > 0, the stream of stage k when every stage starts a new input
    # (train.restart_input_each_stage). It keys the shuffles and the
    # augmentation draws, so each stage's stream is its own.
    self.stream = int(stream)
    self.tfds_data_dir = tfds_data_dir
    # None: tf.data's autotuner picks map parallelism and prefetch depth;
    # n: n parallel calls, two batches prefetched, autotuner off
    # (docs/benchmarks.md measures both).
    if parallel_calls is not None and int(parallel_calls) < 1:
      raise DatasetError('data.parallel_calls must be a positive integer or '
                         f'None (autotune), got {parallel_calls!r}')
    self.parallel_calls = None if parallel_calls is None else int(
        parallel_calls)
    if shuffle_size_k is not None and not shuffle_size_k > 0:
      raise DatasetError('data.shuffle_size_k must be a number > 0 or None '
                         f"(the input's own buffer), got {shuffle_size_k!r}")
    self.shuffle_size_k = shuffle_size_k

  @property
  def autotune(self) -> bool:
    return self.parallel_calls is None

  @property
  def num_parallel_calls(self):
    return AUTOTUNE if self.autotune else self.parallel_calls

  @property
  def split_info(self):
    return self.cfg.splits[self.split]

  @property
  def num_images(self) -> int:
    return self._num_images or self.split_info['num_images']

  @property
  def num_classes(self) -> int:
    return self.cfg.num_classes

  # -- sources: (raw image, one-hot or multi-hot float label) ---------------
  @property
  def is_fake(self) -> bool:
    """--data_dir=null: upstream's constant examples instead of files."""
    return self.data_dir == 'null'

  def fake_label(self):
    """Upstream's label for fake examples: all zeros."""
    return tf.zeros([self.num_classes], tf.float32)

  def fake_dataset(self):
    """Upstream's fake input: all-zero images, already at the output size
    (they skip preprocessing), with `fake_label()`."""
    logging.info('data_dir=null: fake all-zero images')
    zeros = tf.zeros([self.image_size, self.image_size, 3], tf.float32)
    return tf.data.Dataset.from_tensors((zeros, self.fake_label())).repeat(
        self.num_images)

  def make_source_dataset(self, pipeline_id: int, num_pipelines: int):
    if self.is_fake:
      return self.fake_dataset()
    if not self.data_dir:
      raise DatasetError(
          f'{type(self).__name__} reads TFRecord files and needs --data_dir '
          "(or --data_dir=null for fake zero images, as upstream's default)")
    pattern = os.path.join(self.data_dir, self.split_info['files'])
    files = sorted(tf.io.gfile.glob(pattern))
    files = files[_parse_slice(self.split_info['slice'])]
    if not files:
      raise DatasetError(f'no files match {pattern!r} (slice '
                         f"{self.split_info['slice']!r}); check --data_dir")
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.shard(num_pipelines, pipeline_id)
    if self.is_training:
      # Upstream reads the files in a new order every epoch; seeded here,
      # so the order is a function of the run seed (exact resume).
      ds = ds.shuffle(len(files), seed=self._shuffle_seed(104729,
                                                          pipeline_id),
                      reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, buffer_size=8 * 1024 * 1024),
        cycle_length=4, num_parallel_calls=self.num_parallel_calls,
        deterministic=True)
    return ds.map(self.parse_record,
                  num_parallel_calls=self.num_parallel_calls)

  def parse_record(self, record):
    features = tf.io.parse_single_example(record, {
        'image/encoded': tf.io.FixedLenFeature((), tf.string, ''),
        'image/class/label': tf.io.FixedLenFeature([], tf.int64, -1),
    })
    label = tf.cast(features['image/class/label'], tf.int32) - 1  # 1-based.
    return features['image/encoded'], tf.one_hot(label, self.num_classes)

  # -- pipelines -----------------------------------------------------------
  def _shuffle_seed(self, prime, pipeline_id):
    return self.seed + prime * pipeline_id + 15485863 * self.stream

  def _stream_seed(self, tag, pipeline_id):
    seed = tf.constant([self.seed, tag], tf.int64)
    if self.stream:  # Stream 0 keeps the seeds runs had before streams.
      seed = tf.random.experimental.stateless_fold_in(seed, self.stream)
    return tf.random.experimental.stateless_fold_in(seed, pipeline_id)

  def _example_seed(self, pipeline_id, index):
    return tf.random.experimental.stateless_fold_in(
        self._stream_seed(0x5EED, pipeline_id), index)

  def _batch_seed(self, pipeline_id, batch_index):
    return tf.random.experimental.stateless_fold_in(
        self._stream_seed(0x313C, pipeline_id), batch_index)

  def mixing_alphas(self):
    """(mixup, cutmix) alphas this input applies to its training batches."""
    return self.mixup_alpha, self.cutmix_alpha

  def _preprocess(self, image, seed):
    if self.is_fake:
      return image
    return preprocessing.preprocess_image(
        image, self.image_size, self.is_training, seed=seed,
        image_dtype=tf.float32, augment=self.augment)

  def dataset(self, batch_size: int, input_context=None, start_step: int = 0):
    """A pipeline of (images [B, S, S, 3], labels [B, classes]) batches.

    Args:
      batch_size: batch size of this input pipeline (per replica under
        `distribute_dataset_fn`).
      input_context: `tf.distribute.InputContext`, for sharding.
      start_step: training step to start at (resume); ignored for eval.
    """
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    num_pipelines = (input_context.num_input_pipelines
                     if input_context else 1)
    # Each training step takes one batch per replica; this pipeline feeds
    # num_replicas / num_pipelines of them.
    batches_per_step = (input_context.num_replicas_in_sync // num_pipelines
                        if input_context else 1)
    start_batch = int(start_step) * batches_per_step
    ds = self.make_source_dataset(pipeline_id, num_pipelines)
    if self.is_training:
      if self.cache and not self.is_fake:
        ds = ds.cache()
      if not self.is_fake:  # Upstream does not shuffle identical examples.
        ds = ds.shuffle(self.shuffle_buffer_size(),
                        seed=self._shuffle_seed(7919, pipeline_id),
                        reshuffle_each_iteration=True)
      ds = ds.repeat()
      ds = ds.enumerate().skip(start_batch * batch_size)
      ds = ds.map(
          lambda i, ex: (self._preprocess(
              ex[0], self._example_seed(pipeline_id, i)), ex[1]),
          num_parallel_calls=self.num_parallel_calls, deterministic=True)
      ds = ds.batch(batch_size, drop_remainder=True)
      mixup_alpha, cutmix_alpha = self.mixing_alphas()
      if mixup_alpha or cutmix_alpha:
        ds = ds.enumerate(start=start_batch).map(
            lambda b, ex: mix_batch(ex[0], ex[1], mixup_alpha, cutmix_alpha,
                                    self._batch_seed(pipeline_id, b)),
            num_parallel_calls=self.num_parallel_calls, deterministic=True)
    else:
      # Upstream evaluates num_images // batch_size batches of the split
      # (data.splits.<split>.num_images sets how much is evaluated); here
      # exactly num_images examples, the partial last batch included.
      ds = ds.take(_pipeline_share(self.num_images, pipeline_id,
                                   num_pipelines))
      ds = ds.map(lambda image, label: (self._preprocess(image, None), label),
                  num_parallel_calls=self.num_parallel_calls,
                  deterministic=True)
      ds = ds.batch(batch_size, drop_remainder=False)
    if self.image_dtype != tf.float32:
      ds = ds.map(lambda x, y: (tf.cast(x, self.image_dtype), y))
    ds = ds.prefetch(AUTOTUNE if self.autotune else 2)
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = self.autotune
    return ds.with_options(options)

  def shuffle_buffer_size(self) -> int:
    if self.shuffle_size_k:
      return max(1, int(self.shuffle_size_k * 1024))
    return self.default_shuffle_buffer_size()

  def default_shuffle_buffer_size(self) -> int:
    return self.shuffle_buffer

  def distribute_dataset_fn(self, global_batch_size: int, start_step: int = 0):
    """For `strategy.distribute_datasets_from_function`."""
    def dataset_fn(input_context):
      per_replica = input_context.get_per_replica_batch_size(global_batch_size)
      return self.dataset(per_replica, input_context, start_step)
    return dataset_fn


@register_input('imagenet21k')
class ImageNet21kInput(ImageNetInput):
  """ImageNet-21k TFRecords: 'image' bytes and multi-hot 'labels'."""

  class_names = None

  cfg = copy.deepcopy(ImageNetInput.cfg)
  cfg.update(dict(
      num_classes=21843,
      multiclass=True,
      splits=dict(
          train=dict(num_images=12_720_275, files='imagenet21k*',
                     slice='20:'),
          minival=dict(num_images=25_089, files='imagenet21k*',
                       slice='16:20'),
          eval=dict(num_images=100_357, files='imagenet21k*', slice=':16'),
      ),
  ))

  def fake_label(self):
    """Upstream's fake multi-hot label: classes 2 and 3."""
    return tf.reduce_sum(tf.one_hot([2, 3], self.num_classes), axis=0)

  def parse_record(self, record):
    features = tf.io.parse_single_example(record, {
        'image': tf.io.FixedLenFeature([], tf.string),
        'labels': tf.io.FixedLenSequenceFeature([], tf.int64,
                                                allow_missing=True),
    })
    counts = tf.reduce_sum(
        tf.one_hot(features['labels'], self.num_classes), axis=0)
    multi_hot = tf.reshape(tf.minimum(counts, 1.0), [self.num_classes])
    return features['image'], multi_hot


@register_input('cifar10')
class CIFAR10Input(ImageNetInput):
  """CIFAR-10 from tfds."""

  class_names = None

  cfg = copy.deepcopy(ImageNetInput.cfg)
  cfg.update(dict(
      try_gcs=True,
      num_classes=10,
      tfds_name='cifar10',
      splits=dict(
          train=dict(num_images=50_000, tfds_split='train', slice=''),
          minival=dict(num_images=10_000, tfds_split='test', slice=''),
          eval=dict(num_images=10_000, tfds_split='test', slice=''),
      ),
  ))

  def load_tfds(self):
    import tensorflow_datasets as tfds
    return tfds.load(self.cfg.tfds_name,
                     split=self.split_info['tfds_split'],
                     data_dir=self.data_dir or self.tfds_data_dir,
                     shuffle_files=False, try_gcs=self.cfg.try_gcs)

  def default_shuffle_buffer_size(self) -> int:
    # Upstream shuffles cached tfds inputs with a 16K buffer, others with
    # the 128K one.
    return 16 * 1024 if self.cache else self.shuffle_buffer

  @property
  def is_fake(self) -> bool:
    return False  # Upstream's tfds inputs have no fake mode.

  def make_source_dataset(self, pipeline_id: int, num_pipelines: int):
    ds = self.load_tfds().shard(num_pipelines, pipeline_id)
    return ds.map(
        lambda ex: (ex['image'], tf.one_hot(ex['label'], self.num_classes)),
        num_parallel_calls=self.num_parallel_calls)


@register_input('cifar100')
class CIFAR100Input(CIFAR10Input):
  cfg = copy.deepcopy(CIFAR10Input.cfg)
  cfg.update(dict(num_classes=100, tfds_name='cifar100'))


@register_input('flowers')
class FlowersInput(CIFAR10Input):
  cfg = copy.deepcopy(CIFAR10Input.cfg)
  cfg.update(dict(
      num_classes=102,
      tfds_name='oxford_flowers102',
      splits=dict(
          train=dict(num_images=1_020, tfds_split='train+validation'),
          minival=dict(num_images=1_020, tfds_split='validation'),
          eval=dict(num_images=6_149, tfds_split='test'),
      ),
  ))


@register_input('tfflowers')
class TFFlowersInput(CIFAR10Input):
  # Upstream's train and eval splits overlap (70% / last 70%); kept as is.
  cfg = copy.deepcopy(CIFAR10Input.cfg)
  cfg.update(dict(
      num_classes=5,
      tfds_name='tf_flowers',
      splits=dict(
          train=dict(num_images=2_569, tfds_split='train[:70%]'),
          minival=dict(num_images=1_101, tfds_split='train[30%:]'),
          eval=dict(num_images=1_101, tfds_split='train[30%:]'),
      ),
  ))


@register_input('cars')
class CarsInput(CIFAR10Input):
  cfg = copy.deepcopy(CIFAR10Input.cfg)
  cfg.update(dict(
      num_classes=196,
      tfds_name='cars196',
      splits=dict(
          train=dict(num_images=8_144, tfds_split='train'),
          minival=dict(num_images=8_041, tfds_split='test'),
          eval=dict(num_images=8_041, tfds_split='test'),
      ),
  ))


@register_input('imagenettfds')
class ImageNetTfdsInput(CIFAR10Input):
  class_names = KERAS_IMAGENET_CLASSES
  cfg = copy.deepcopy(CIFAR10Input.cfg)
  cfg.update(dict(
      num_classes=1000,
      tfds_name='imagenet2012',
      splits=dict(
          train=dict(num_images=1_256_144, tfds_split='train[:98%]'),
          minival=dict(num_images=25_021, tfds_split='train[2%:]'),
          eval=dict(num_images=50_000, tfds_split='validation'),
          trainval=dict(num_images=1_281_167, tfds_split='train'),
      ),
  ))


@register_input('fashion_mnist', recipe='fashion_mnist')
class FashionMNISTInput(CIFAR10Input):
  """Fashion-MNIST (28x28 grayscale, 10 classes) from tfds.

  `data_dir` is a folder with the four IDX .gz files (default: Debian's
  /usr/share/datasets/fashion-mnist when installed), checked and prepared
  offline; 'tfds' or no local files means tfds' own download.
  """

  # From the dataset's documentation.
  class_names = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
  cfg = copy.deepcopy(CIFAR10Input.cfg)
  cfg.update(dict(
      num_classes=10,
      tfds_name='fashion_mnist',
      splits=dict(
          train=dict(num_images=60_000, tfds_split='train', slice=''),
          minival=dict(num_images=10_000, tfds_split='test', slice=''),
          eval=dict(num_images=10_000, tfds_split='test', slice=''),
      ),
  ))

  def load_tfds(self):
    import tensorflow_datasets as tfds
    folder = self.data_dir
    if folder is None:
      folder = local_data.default_fashion_mnist_dir()
    if folder in (None, 'tfds'):
      return tfds.load(self.cfg.tfds_name, split=self.split_info['tfds_split'],
                       data_dir=self.tfds_data_dir, shuffle_files=False)
    builder = local_data.prepare_fashion_mnist(folder, self.tfds_data_dir)
    return builder.as_dataset(split=self.split_info['tfds_split'],
                              shuffle_files=False)


def dataset_classes():
  """Every Input class by its data.ds_name, in the order registered."""
  return dict(_INPUTS)


def get_dataset_class(ds_name: str):
  return registry.lookup('dataset', ds_name, dataset_classes(), DatasetError)


def build_dataset_input(is_training, settings, config, split=None,
                        image_dtype=None, data_dir=None, stream=0):
  """An Input for run `config`'s dataset (its `data` section, the run seed)
  with `settings` (a progressive.StageSettings: image size, augmentation,
  and mixing when training); `data_dir` (--data_dir) wins over the
  config's; `stream` picks one of the run's training streams (see
  Input.stream)."""
  data = config.data
  ds_cls = get_dataset_class(data.ds_name)
  split_info = data.splits.get(
      split or ('train' if is_training else 'eval')) or {}
  return ds_cls(
      is_training=is_training,
      image_size=settings.image_size,
      image_dtype=image_dtype,
      data_dir=data_dir or data.data_dir,
      split=split,
      cache=data.cache,
      augment=settings.augment,
      mixup_alpha=settings.mixup_alpha,
      cutmix_alpha=settings.cutmix_alpha,
      seed=config.runtime.seed,
      tfds_data_dir=data.get('tfds_data_dir'),
      parallel_calls=data.get('parallel_calls'),
      shuffle_size_k=data.get('shuffle_size_k'),
      num_images=split_info.get('num_images'), stream=stream)


# -- training configs ---------------------------------------------------------
@ds_register
class ImageNet:
  """ImageNet from scratch."""
  cfg = hparams.Config(
      data=dict(ds_name='imagenet', multiclass=False),
      train=dict(epochs=350, lr_base=0.016, lr_warmup_epoch=5,
                 lr_sched='exponential', label_smoothing=0.1),
      eval=dict(batch_size=8),
  )


@ds_register
class ImageNet21k:
  """ImageNet-21k pretraining: no augmentation, no staged training."""
  cfg = hparams.Config(
      model=dict(dropout_rate=0.000001, survival_prob=1.0),
      data=dict(ds_name='imagenet21k', multiclass=True, augname=None,
                mixup_alpha=0, cutmix_alpha=0),
      train=dict(epochs=60, lr_base=0.008, lr_warmup_epoch=1,
                 lr_sched='cosine', label_smoothing=0.0, isize=224, stages=0,
                 sched=False),
      eval=dict(batch_size=128, isize=224),
  )


@ds_register
class ImagenetFt(ImageNet):
  """Fine-tuning: less regularization for the short schedule."""
  cfg = hparams.Config(
      model=dict(dropout_rate=0.000001, survival_prob=0.8),
      train=dict(batch_size=512, stages=0, epochs=15, optimizer='rmsprop',
                 lr_sched='constant', lr_base=0.0005, lr_warmup_epoch=1,
                 ema_decay=0.9996, weight_decay=1e-5, label_smoothing=0.1,
                 min_steps=10000, isize=1.0),
      data=dict(ds_name='imagenettfds', augname='ft', mixup_alpha=0,
                cutmix_alpha=0),
  )


def _finetune_config(ds_name):
  cfg = copy.deepcopy(ImagenetFt.cfg)
  cfg.data.ds_name = ds_name
  return cfg


@ds_register
class Cifar10Ft(ImagenetFt):
  cfg = _finetune_config('cifar10')


@ds_register
class Cifar100Ft(Cifar10Ft):
  cfg = _finetune_config('cifar100')


@ds_register
class FlowersFt(Cifar10Ft):
  cfg = _finetune_config('flowers')


@ds_register
class TFFlowersFt(Cifar10Ft):
  cfg = _finetune_config('tfflowers')


@ds_register
class CarsFt(Cifar10Ft):
  cfg = _finetune_config('cars')


@ds_register
class FashionMNISTFt(Cifar10Ft):
  """The study's config: Cifar10Ft with Fashion-MNIST.

  It inherits stages=0 (no progressive learning) and fine-tuning settings,
  so it expects a pretrained train.ft_init_ckpt.
  """
  cfg = _finetune_config('fashion_mnist')


@ds_register(name='fashion_mnist_paper_range')
class FashionMNISTPaperRange:
  """`fashion_mnist` with the paper's range of image sizes, for the study.

  recipes/fashion_mnist_paper_range.yaml lists what differs.
  """
  cfg = recipes.load('fashion_mnist', 'fashion_mnist_paper_range')


def get_dataset_config(name: str, prefix='ds:') -> hparams.Config:
  """A training config by name (case-insensitive), with its dataset's facts."""
  cfg = copy.deepcopy(hparams.lookup(name, prefix).cfg)
  cfg.data.update(get_dataset_class(cfg.data.ds_name).cfg)
  return cfg
