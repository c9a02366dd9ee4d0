"""Where a training step's time goes: op types, ours vs keras.applications.

Runs the two sides of `train_throughput.py` (the Trainer's loop and
EfficientNetV2B0 under `model.fit`, same synthetic batch and size) under
TensorFlow's profiler and sums the host time of each TF op type. The table
shows which kernels the remaining gap is made of, and which ones the two
graphs share (the same time on both sides cannot be won by this port).

  python bench/profile_step.py --size=64 --steps=10

Op times are summed over the executor's threads, so their total exceeds
the wall time when ops run in parallel; compare shares, not sums with wall.
"""
import argparse
import collections
import glob
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cli  # noqa: E402  pylint: disable=wrong-import-position
bench_cli.quiet_tensorflow_import()

import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

import train_throughput  # noqa: E402  (bench/ is on sys.path above)


# Events of the executor itself (one per thread's work item), not ops.
_NOT_OPS = frozenset(['Process'])


def op_type_of(event_name):
  """The op type of a kernel event ('scope/name:OpType', or the bare type).

  oneDNN kernels keep their graph-rewritten names (`_MklNativeConv2D`), which
  is how to see that a TF op ran through oneDNN.
  """
  op_type = event_name.rsplit(':', 1)[-1]
  return None if op_type in _NOT_OPS else op_type


def op_times(logdir):
  """{op type: total seconds} over every xplane file in logdir."""
  totals = collections.defaultdict(float)
  files = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)
  if not files:
    raise RuntimeError(f'the profiler wrote no .xplane.pb under {logdir}')
  for path in files:
    space = xplane_pb2.XSpace()
    with open(path, 'rb') as f:
      space.ParseFromString(f.read())
    for plane in space.planes:
      if not plane.name.startswith('/host:CPU'):
        continue
      for line in plane.lines:
        if not line.name.startswith('tf_Compute'):  # Kernels run there.
          continue
        for event in line.events:
          meta = plane.event_metadata.get(event.metadata_id)
          op_type = op_type_of(meta.name if meta else '')
          if op_type:
            totals[op_type] += event.duration_ps * 1e-12
  return totals


def profile(run_steps, steps):
  logdir = tempfile.mkdtemp(prefix='profile_step_')
  tf.profiler.experimental.start(logdir)
  try:
    run_steps(steps)
  finally:
    tf.profiler.experimental.stop()
  return op_times(logdir)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--size', type=int, default=64)
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--top', type=int, default=20)
  args = parser.parse_args()

  theirs = train_throughput.KerasFit(args.size, args.batch)
  ours = train_throughput.Ours(args.size, args.batch, steps_per_call=args.steps,
                               jit=False)
  # Exactly `steps` training steps on each side: one fit call of that many
  # batches (its start-up runs no kernels), one call of the Trainer's loop.
  keras_ops = profile(theirs.fit, args.steps)
  ours_ops = profile(lambda _: ours.run(1), args.steps)

  keras_total = sum(keras_ops.values())
  ours_total = sum(ours_ops.values())
  print(f'{args.size} px, batch {args.batch}, {args.steps} steps each; op '
        'time per step in ms (summed over threads) and share of the total')
  print(f'{"op type":48s} {"ours":>9s} {"share":>6s} {"keras":>9s} '
        f'{"share":>6s}')
  names = sorted(set(keras_ops) | set(ours_ops),
                 key=lambda n: -max(ours_ops.get(n, 0.0),
                                    keras_ops.get(n, 0.0)))
  per_step = 1e3 / args.steps
  for name in names[:args.top]:
    o = ours_ops.get(name, 0.0)
    k = keras_ops.get(name, 0.0)
    print(f'{name[:48]:48s} {o * per_step:9.2f} {100 * o / ours_total:5.1f}% '
          f'{k * per_step:9.2f} {100 * k / keras_total:5.1f}%')
  print(f'{"all op types":48s} {ours_total * per_step:9.2f} {"":6s} '
        f'{keras_total * per_step:9.2f}')


if __name__ == '__main__':
  main()
