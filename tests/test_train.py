"""The trainer end to end on real Fashion-MNIST with a tiny model."""
import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from automl_effnetv2 import main
from automl_effnetv2 import run_dir
from automl_effnetv2 import train_errors
from automl_effnetv2 import train_lib
from conftest import (CONFIDENT_RUN_HPARAMS, REPO, SHARED_RUN_HPARAMS, cli_env,
                      copy_of_shared_run, main_command, one_device)


def _checkpoint_values(path):
  """{variable key: value} of the model part of a checkpoint."""
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name)
          for name, _ in tf.train.list_variables(path)
          if name.startswith(('model/', 'ema/', 'step'))}


def test_two_stages_train_and_the_loss_falls(tiny_config, tmp_path):
  config = tiny_config('train.epochs=0.04,train.stages=2,data.mixup_alpha=0,'
                       'data.cutmix_alpha=0,data.augname=ft_plain,'
                       'train.optimizer=momentum,train.lr_base=0.5')
  trainer = train_lib.Trainer(config, str(tmp_path), strategy=one_device())
  result = trainer.train()
  assert result['global_step'] == trainer.plan.total_steps == 150
  assert [s.image_size for s in trainer.plan.stages] == [28, 32]
  losses = [h['loss'] for h in trainer.history]
  assert [h['stage'] for h in trainer.history] == [1] * 15 + [2] * 15
  assert [h['image_size'] for h in trainer.history] == [28] * 15 + [32] * 15
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.3, losses
  assert os.path.exists(tmp_path / 'config.yaml')
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith('ckpt-150')


def _first_batches(trainer, stage, step, count):
  iterator = trainer.stage_iterator(stage, step)
  return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize('restart', [False, True])
def test_stages_read_one_stream_or_restart_as_upstream(tiny_config, tmp_path,
                                                       restart):
  """By default the stages go on through one stream; with
  train.restart_input_each_stage each stage reads a new stream from its
  start, as upstream's stage loop does, and resumes inside it."""
  # Without shuffling (a buffer of one example), a stream is the file order.
  config = tiny_config('train.stages=2,data.mixup_alpha=0,'
                       'data.cutmix_alpha=0,data.shuffle_size_k=0.0001,'
                       f'train.restart_input_each_stage={restart}')
  trainer = train_lib.Trainer(config, str(tmp_path), strategy=one_device())
  first, second = trainer.plan.stages
  start = trainer.plan.stage_start(second)
  assert start == first.max_steps > 2
  head = _first_batches(trainer, first, 0, 1)[0]
  batches = _first_batches(trainer, second, start, 3)
  labels = lambda batch: np.argmax(batch[1].numpy(), -1).tolist()
  assert (labels(batches[0]) == labels(head)) == restart
  # Resuming inside the stage reads on where the stage's stream was.
  resumed = _first_batches(trainer, second, start + 2, 1)[0]
  np.testing.assert_array_equal(resumed[0].numpy(), batches[2][0].numpy())
  # The continuing stream at the stage's start is the run's one stream.
  if not restart:
    np.testing.assert_array_equal(
        labels(batches[0]),
        labels(_first_batches(trainer, first, start, 1)[0]))


def test_stage_settings_reach_model_and_pipeline(tiny_config, tmp_path):
  config = tiny_config('train.stages=3,train.sched_dropout=true,'
                       'model.dropout_rate=0.3,data.ram=11,'
                       'data.mixup_alpha=0.6')
  trainer = train_lib.Trainer(config, str(tmp_path), strategy=one_device())
  expected_ram = np.linspace(5, 11, 3)
  for stage, ram, mix, dropout in zip(trainer.plan.stages, expected_ram,
                                      [0, 0.3, 0.6], [0, 0.15, 0.3]):
    trainer.set_stage_dropout(stage)
    pipeline = trainer.stage_input(stage)
    assert pipeline.image_size == stage.image_size
    assert pipeline.augment.magnitude == pytest.approx(ram)
    assert pipeline.mixing_alphas() == (stage.mixup_alpha, stage.cutmix_alpha)
    assert stage.mixup_alpha == pytest.approx(mix)
    assert trainer.model.dropout_rate == pytest.approx(dropout)
  assert [s.image_size for s in trainer.plan.stages] == [26, 29, 32]


def _train_command(model_dir, fashion_dir, extra=''):
  """`main.py --mode=train` of the tiny config for 0.02 epochs (75 steps),
  saving every 15 steps (fewer saves than the tiny config's 5)."""
  return main_command(fashion_dir, '--mode=train', f'--model_dir={model_dir}',
                      extra=',train.epochs=0.02,'
                      'runtime.save_checkpoints_steps=15' + extra)


def _wait_for_first_checkpoint(proc, model_dir):
  """Returns once the running command `proc` has saved into model_dir."""
  deadline = time.time() + 240
  while not tf.train.latest_checkpoint(str(model_dir)):
    assert proc.poll() is None and time.time() < deadline, 'no checkpoint'
    time.sleep(0.02)


def _wait_for_checkpoint_after(proc, model_dir, step):
  """Returns once the running command `proc` has saved past `step`."""
  deadline = time.time() + 240
  while True:
    latest = tf.train.latest_checkpoint(str(model_dir))
    if latest and int(latest.split('-')[-1]) > step:
      return
    assert proc.poll() is None and time.time() < deadline, 'no checkpoint'
    time.sleep(0.02)


def test_killed_and_terminated_runs_resume_to_the_same_weights(
    fashion_mnist_tfds_dir, tmp_path):
  whole, stopped = tmp_path / 'whole', tmp_path / 'stopped'
  subprocess.run(_train_command(whole, fashion_mnist_tfds_dir), check=True,
                 env=cli_env(), cwd=REPO, capture_output=True)
  # The same command, SIGKILLed right after its first periodic checkpoint.
  proc = subprocess.Popen(_train_command(stopped, fashion_mnist_tfds_dir),
                          env=cli_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  _wait_for_first_checkpoint(proc, stopped)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  killed_at = int(tf.train.latest_checkpoint(str(stopped)).split('-')[-1])
  assert killed_at < 60, 'the run finished before it could be killed'
  # Rerun, then SIGTERM after its next checkpoint: it saves and says so.
  # Files, not pipes: a full pipe would stall the child before it saves.
  out_path, err_path = tmp_path / 'stdout', tmp_path / 'stderr'
  with open(out_path, 'w') as out, open(err_path, 'w') as err:
    proc = subprocess.Popen(_train_command(stopped, fashion_mnist_tfds_dir),
                            env=cli_env(), cwd=REPO, stdout=out, stderr=err)
  _wait_for_checkpoint_after(proc, stopped, killed_at)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  stdout, stderr = out_path.read_text(), err_path.read_text()
  assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
  assert 'Traceback' not in stderr, stderr[-2000:]
  assert f'steps {killed_at}->' in stdout  # Resumed where it was killed.
  saved = tf.train.latest_checkpoint(str(stopped))
  assert f'interrupted: saved {saved}; rerun the same command' in stdout
  terminated_at = int(saved.split('-')[-1])
  assert terminated_at < 75, 'the run finished before the signal'
  resumed = subprocess.run(_train_command(stopped, fashion_mnist_tfds_dir),
                           env=cli_env(), cwd=REPO, capture_output=True,
                           text=True, check=True)
  assert f'steps {terminated_at}->' in resumed.stdout
  final_whole = _checkpoint_values(tf.train.latest_checkpoint(str(whole)))
  final_stopped = _checkpoint_values(tf.train.latest_checkpoint(str(stopped)))
  assert final_whole.keys() == final_stopped.keys()
  for name in final_whole:
    np.testing.assert_array_equal(final_whole[name], final_stopped[name],
                                  err_msg=name)


def test_resuming_with_another_config_is_refused(shared_tiny_run, tiny_config,
                                                 tmp_path):
  model_dir = copy_of_shared_run(shared_tiny_run, tmp_path)
  other = train_lib.Trainer(tiny_config(SHARED_RUN_HPARAMS + ',data.ram=7'),
                            model_dir, strategy=one_device())
  with pytest.raises(run_dir.RunDirError, match='data.ram'):
    other.train()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_config,
                                                          tmp_path):
  config = tiny_config('train.epochs=0.04,train.stages=0,train.lr_base=1e9,'
                       'train.optimizer=sgd,train.label_smoothing=0')
  trainer = train_lib.Trainer(config, str(tmp_path), strategy=one_device())
  with pytest.raises(train_errors.TrainingError, match='good checkpoint'):
    trainer.train()
  latest = tf.train.latest_checkpoint(str(tmp_path))
  if latest:  # Anything saved must hold finite weights.
    for value in _checkpoint_values(latest).values():
      assert np.isfinite(value).all()


# Three steps with no randomness in the model or the batch mixing (no
# dropout, stochastic depth, mixup or cutmix), logged each step: two set-ups
# that should compute the same thing can be compared step by step.
_THREE_DETERMINISTIC_STEPS = (
    'model.dropout_rate=0,model.survival_prob=None,data.mixup_alpha=0,'
    'data.cutmix_alpha=0,train.epochs=0,train.min_steps=3,train.stages=0,'
    'runtime.log_step_count_steps=1')


def test_one_cpu_reads_its_dataset_undistributed_with_the_same_batches():
  def dataset_fn(context):
    batch = context.get_per_replica_batch_size(8)
    return tf.data.Dataset.range(40).shard(
        context.num_input_pipelines, context.input_pipeline_id).map(
            lambda i: (tf.cast(i, tf.float32), i % 3)).batch(batch)
  strategy = one_device()
  plain = train_lib.distribute_dataset(strategy, dataset_fn)
  # Not wrapped: a distributed dataset's iterator slowed every step.
  assert isinstance(plain, tf.data.Dataset)
  distributed = strategy.distribute_datasets_from_function(dataset_fn)
  pairs = list(zip(plain, distributed))
  assert len(pairs) == 5
  for (images, labels), (images_d, labels_d) in pairs:
    np.testing.assert_array_equal(images.numpy(), images_d.numpy())
    np.testing.assert_array_equal(labels.numpy(), labels_d.numpy())
  # Several replicas: distributed, each replica gets its share.
  mirrored = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
  shared = train_lib.distribute_dataset(mirrored, dataset_fn)
  assert not isinstance(shared, tf.data.Dataset)
  first = next(iter(shared))[0]
  assert [t.shape[0] for t in mirrored.experimental_local_results(first)] == [
      4, 4]


def test_mirrored_two_replicas_match_one_device(tiny_config, tmp_path):
  # Sync BN and no per-replica randomness (dropout, stochastic depth,
  # mixing) make the two setups compute the same global step. Sync BN's
  # E[x^2] - E[x]^2 variance differs from one device's in the 6th digit, and
  # training amplifies that, so compare after 3 steps: trainable weights
  # within 1e-4, BN statistics within 1e-3, losses within 1e-4.
  extra = 'model.bn_type=sync_bn,' + _THREE_DETERMINISTIC_STEPS
  results = {}
  for name, strategy in [
      ('one', one_device()),
      ('mirrored', tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))]:
    trainer = train_lib.Trainer(tiny_config(extra), str(tmp_path / name),
                                strategy=strategy)
    assert trainer.num_replicas == (2 if name == 'mirrored' else 1)
    if name == 'one':
      initial = [w.numpy() for w in trainer.model.trainable_weights]
    trainer.train()
    if name == 'mirrored':  # Each replica's copy got the same update.
      for variable in (trainer.model.trainable_weights +
                       trainer.optimizer.variables):
        copies = [c.numpy() for c in variable.value.values]
        np.testing.assert_array_equal(copies[0], copies[1])
    results[name] = (
        [w.numpy() for w in trainer.model.trainable_weights],
        [w.numpy() for w in trainer.model.non_trainable_weights],
        [h['loss'] for h in trainer.history])
  (train_one, stats_one, loss_one) = results['one']
  (train_mirrored, stats_mirrored, loss_mirrored) = results['mirrored']
  assert len(loss_one) == 3
  np.testing.assert_allclose(loss_one, loss_mirrored, atol=1e-4)
  for one, mirrored in zip(train_one, train_mirrored):
    np.testing.assert_allclose(one, mirrored, atol=1e-4)
  for one, mirrored in zip(stats_one, stats_mirrored):
    np.testing.assert_allclose(one, mirrored, atol=1e-3, rtol=1e-3)
  # The steps did change the weights: the comparison is not trivial.
  assert max(np.abs(a - b).max() for a, b in zip(train_one, initial)) > 1e-3


def test_xla_train_step_matches_plain_step(tiny_config, tmp_path):
  # runtime.jit_compile=true (for GPUs and TPUs) must compile the train step
  # with XLA and still train the same model: same losses and weights after
  # 3 deterministic steps, up to XLA's different fusion and op order.
  results = {}
  for jit in (False, True):
    config = tiny_config(f'{_THREE_DETERMINISTIC_STEPS},'
                         f'runtime.jit_compile={str(jit).lower()}')
    trainer = train_lib.Trainer(config, str(tmp_path / f'jit_{jit}'),
                                strategy=one_device())
    # Private, but the only handle on whether XLA was asked for.
    assert getattr(trainer.steps._train_step_fn, '_jit_compile', None) is (
        True if jit else None)
    trainer.train()
    results[jit] = ([w.numpy() for w in trainer.model.trainable_weights],
                    [h['loss'] for h in trainer.history])
  (plain_weights, plain_losses), (xla_weights, xla_losses) = (
      results[False], results[True])
  assert len(plain_losses) == 3 and all(np.isfinite(xla_losses))
  np.testing.assert_allclose(plain_losses, xla_losses, atol=1e-4)
  for plain, xla in zip(plain_weights, xla_weights):
    np.testing.assert_allclose(plain, xla, atol=1e-4)


@pytest.mark.multiprocess
def test_multi_worker_mirrored_two_processes(fashion_mnist_tfds_dir, tmp_path):
  import portpicker  # pylint: disable=g-import-not-at-top
  ports = [portpicker.pick_unused_port() for _ in range(2)]
  cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
  procs = []
  for index in range(2):
    env = cli_env()
    env['TF_CONFIG'] = json.dumps({'cluster': cluster,
                                   'task': {'type': 'worker', 'index': index}})
    command = _train_command(tmp_path / 'run', fashion_mnist_tfds_dir,
                             ',train.epochs=0.01,train.stages=0')
    command = [a for a in command if not a.startswith('--strategy=')] + [
        '--strategy=multi_worker_mirrored']
    procs.append(subprocess.Popen(command, env=env, cwd=REPO,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]
  assert tf.train.latest_checkpoint(str(tmp_path / 'run')).endswith('ckpt-37')
  metrics = json.loads((tmp_path / 'run' / 'metrics.json').read_text())
  from conftest import TINY_EVAL_IMAGES  # pylint: disable=g-import-not-at-top
  # The two workers' pipelines each read their share of the eval images.
  assert metrics['final']['eval/num_examples'] == TINY_EVAL_IMAGES


def test_eval_uses_the_ema_weights(confident_tiny_run, tiny_config, tmp_path):
  config = tiny_config(CONFIDENT_RUN_HPARAMS)
  model_dir = copy_of_shared_run(confident_tiny_run, tmp_path)
  trainer = train_lib.Trainer(config, model_dir, strategy=one_device())
  initial = [v.numpy() for v in trainer.ema.shadows]  # Untrained weights.
  assert trainer.checkpoints.restore() > 0
  raw = trainer.evaluate(use_ema=False)['eval/acc_top1']
  # Put the untrained weights into the average: EMA and raw now differ.
  trainer.ema.reset_to(initial)
  trainer.checkpoints.save()
  ema = trainer.evaluate(use_ema=True)['eval/acc_top1']
  assert raw > 0.5 and ema < 0.3, (raw, ema)
  # What --mode=eval reports is the EMA evaluation of the checkpoint.
  recorded = main.run('eval', config, model_dir, strategy=one_device())
  assert recorded['eval/ema'] is True
  assert recorded['eval/acc_top1'] == pytest.approx(ema, abs=1e-6)
  # Evaluation swapped the raw weights back in afterwards.
  assert trainer.evaluate(use_ema=False)['eval/acc_top1'] == pytest.approx(raw)


def test_eval_without_checkpoint_is_a_clear_error(tiny_config, tmp_path):
  with pytest.raises(train_errors.TrainingError, match='--mode=train'):
    main.run('eval', tiny_config(), str(tmp_path), strategy=one_device())


def test_learning_rate_schedule_formulas():
  from automl_effnetv2 import utils  # pylint: disable=g-import-not-at-top
  kwargs = dict(initial_lr=1.0, steps_per_epoch=10, total_steps=100,
                warmup_epochs=1)
  assert float(utils.learning_rate_at(5, **kwargs,
                                      lr_decay_type='cosine')) == 0.5
  assert float(utils.learning_rate_at(50, **kwargs, lr_decay_type='cosine')
               ) == pytest.approx(0.5)
  assert float(utils.learning_rate_at(50, **kwargs, lr_decay_type='linear')
               ) == pytest.approx(0.5)
  # Exponential: 0.97 every 2.4 epochs = 24 steps, staircase.
  assert float(utils.learning_rate_at(
      50, **kwargs, lr_decay_type='exponential')) == pytest.approx(0.97 ** 2)
  assert float(utils.learning_rate_at(
      99, **kwargs, lr_decay_type='cosine', minimal_lr=0.1)) == pytest.approx(0.1)
  assert float(utils.learning_rate_at(
      30, **kwargs, lr_decay_type='constant')) == 1.0
  assert float(utils.weight_decay_at(
      50, weight_decay=1e-5, weight_decay_inc=2.0, total_steps=100)
               ) == pytest.approx(2e-5)


def test_rmsprop_starts_from_upstreams_unit_mean_square():
  from automl_effnetv2 import utils  # pylint: disable=g-import-not-at-top
  var = tf.Variable([1.0])
  opt = utils.build_optimizer('rmsprop', learning_rate=0.1)
  opt.apply([tf.constant([2.0])], [var])
  # TF1: ms = 0.9 * 1 + 0.1 * 4 = 1.3; mom = 0.1 * 2 / sqrt(1.3 + 1e-3).
  assert var.numpy()[0] == pytest.approx(1 - 0.2 / np.sqrt(1.301), rel=1e-5)


def _rmsprop_trajectory(fused, learning_rates):
  """Weights and slots after RMSprop steps with the given learning rates."""
  from automl_effnetv2 import utils  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(3)
  grads = [rng.normal(size=(4, 3)).astype('float32') for _ in learning_rates]
  kernel = keras.Variable(rng.normal(size=(4, 3)).astype('float32'))
  # A changing learning rate: one value per step.
  schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
      list(range(1, len(learning_rates))), list(learning_rates))
  opt = utils.build_optimizer('rmsprop', learning_rate=schedule)
  opt.fused = fused  # False: Keras' composed update with the same slots.
  opt.build([kernel])
  step = tf.function(lambda grad: opt.apply([grad], [kernel]))
  for grad in grads:
    step(tf.constant(grad))
  return kernel.numpy(), [v.numpy() for v in opt.variables[1:]]


def test_fused_rmsprop_equals_keras_update():
  # ResourceApplyRMSProp (TF1's kernel, used by the port) against Keras'
  # composed RMSprop update on the same TF1 slots, with a changing LR. The
  # Mirrored path is checked on the Trainer (test_mirrored_two_replicas_...).
  rates = [0.1, 0.05, 0.2, 0.01]
  fused, fused_slots = _rmsprop_trajectory(True, rates)
  composed, composed_slots = _rmsprop_trajectory(False, rates)
  # The comparison is not vacuous: the later steps move the weights.
  assert not np.allclose(fused, _rmsprop_trajectory(True, rates[:2])[0])
  np.testing.assert_allclose(fused, composed, rtol=1e-5, atol=1e-6)
  for a, b in zip(fused_slots, composed_slots):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_rmsprop_runs_the_tf1_kernel():
  from automl_effnetv2 import utils  # pylint: disable=g-import-not-at-top

  def update_op_types(fused):
    var = tf.Variable([1.0, 2.0])
    opt = utils.build_optimizer('rmsprop', learning_rate=0.1)
    opt.fused = fused
    opt.build([var])
    graph_def = tf.function(
        lambda: opt.apply([tf.constant([1.0, 1.0])], [var])
    ).get_concrete_function().graph.as_graph_def()
    op_types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:  # Nested functions too.
      op_types |= {node.op for node in function.node_def}
    return op_types

  assert 'ResourceApplyRMSProp' in update_op_types(fused=True)
  assert 'ResourceApplyRMSProp' not in update_op_types(fused=False)


def test_trainer_stages_cover_its_steps_and_end_at_the_train_size(
    tiny_config, tmp_path):
  config = tiny_config('train.stages=4')
  trainer = train_lib.Trainer(config, str(tmp_path), strategy=one_device())
  sizes = [s.image_size for s in trainer.plan.stages]
  ends = [s.max_steps for s in trainer.plan.stages]
  assert len(trainer.plan.stages) == 4
  assert sizes == sorted(set(sizes)) and sizes[-1] == config.train.isize
  assert ends == sorted(set(ends)) and ends[-1] == trainer.plan.total_steps


def test_float16_training_uses_loss_scaling(tiny_config, tmp_path):
  # On a GPU, mixed precision means float16; the policy can be forced here
  # to exercise the loss-scaled path on a CPU.
  import keras  # pylint: disable=g-import-not-at-top
  config = tiny_config('runtime.mixed_precision=mixed_float16,'
                       'train.epochs=0.01,train.stages=0')
  try:
    trainer = train_lib.Trainer(config, str(tmp_path), strategy=one_device())
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.model.get_layer('head_conv').compute_dtype == 'float16'
    trainer.train()
    assert all(np.isfinite(h['loss']) for h in trainer.history)
    assert trainer.model(np.zeros((1, 32, 32, 3), 'float32')).dtype == (
        tf.float32)
    result = trainer.evaluate()
    assert result['eval/num_examples'] == config.data.splits.eval.num_images
    assert 0 <= result['eval/acc_top1'] <= result['eval/acc_top5'] <= 1
  finally:
    keras.mixed_precision.set_global_policy('float32')
