"""Plots a run's training curve from its TensorBoard summaries and metrics.

  python bench/plot_run.py runs/fashion_mnist docs/fashion_mnist_run.png

Top: training loss and accuracy (on augmented batches) per log interval, with
the stage boundaries; bottom: image size and RandAugment magnitude per stage.
Evaluations from metrics.json are marked on the accuracy axis.
"""
import glob
import json
import os
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402


def read_scalars(event_dir):
  """{tag: [(step, value)]} from the event files in a folder."""
  scalars = {}
  for path in sorted(glob.glob(os.path.join(event_dir, 'events.out.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        number = tf.make_ndarray(value.tensor) if value.HasField(
            'tensor') else value.simple_value
        scalars.setdefault(value.tag, []).append((event.step, float(number)))
  return {tag: sorted(points) for tag, points in scalars.items()}


def main(model_dir, out_path):
  scalars = read_scalars(os.path.join(model_dir, 'train'))
  with open(os.path.join(model_dir, 'metrics.json'), encoding='utf-8') as f:
    evals = json.load(f).get('evals', [])
  fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                    gridspec_kw={'height_ratios': [3, 1]})
  steps, loss = zip(*scalars['train/xent'])
  top.plot(steps, loss, color='tab:red', lw=0.8, label='train cross-entropy')
  top.set_ylabel('cross-entropy')
  acc_axis = top.twinx()
  steps, acc = zip(*scalars['train/accuracy'])
  acc_axis.plot(steps, [100 * a for a in acc], color='tab:blue', lw=0.8,
                label='train accuracy (augmented)')
  for e in evals:
    acc_axis.plot(e['global_step'], 100 * e['eval/acc_top1'], 'k*', ms=10)
    acc_axis.annotate(f"{100 * e['eval/acc_top1']:.2f}%",
                      (e['global_step'], 100 * e['eval/acc_top1']),
                      textcoords='offset points', xytext=(-40, 6))
  acc_axis.set_ylabel('accuracy (%); * = eval top-1 (EMA)')
  stage_points = scalars['train/stage']
  for (s0, a), (s1, b) in zip(stage_points, stage_points[1:]):
    if b != a:
      for axis in (top, bottom):
        axis.axvline(s0, color='gray', ls=':', lw=0.8)
  steps, size = zip(*scalars['train/image_size'])
  bottom.plot(steps, size, color='tab:green', label='image size (px)')
  steps, ram = zip(*scalars['train/randaug_magnitude'])
  bottom.plot(steps, ram, color='tab:purple', label='RandAugment magnitude')
  bottom.set_xlabel('step')
  bottom.legend(loc='center right', fontsize=8)
  top.legend(loc='upper center', fontsize=8)
  acc_axis.legend(loc='center right', fontsize=8)
  fig.tight_layout()
  fig.savefig(out_path, dpi=110)
  print(f'wrote {out_path}')


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
