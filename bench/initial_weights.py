r"""Compares the port's initial weights with upstream's as distributions.

  python bench/initial_weights.py --config runs/upstream_vs_port_prefix/port/none/seed_7 \
      --seeds 4-18 \
      --upstream 'runs/upstream_vs_port_*/upstream/none/seed_*/model.ckpt-0'

Upstream draws its initial weights without a seed, so two runs of each side
never start from the same weights; what must agree is the distribution they
are drawn from. The port's weights are drawn for each of `--seeds` (the run
in `--config`, its runtime.seed replaced) and upstream's are read from its
runs' `model.ckpt-0` files (`--upstream`: paths or quoted patterns,
comma-separated). Every model variable, by upstream's name, gets:

- per draw, its mean, standard deviation and kurtosis; the draws of each
  side are then compared with Welch's t, and a variable is flagged where
  |t| > --max_t for any of the three (a variable that is one constant on
  both sides, such as a batch-norm scale, must hold the same constant);
- the largest |correlation| x sqrt(size) between two variables of the same
  size within one draw, and between two draws of the same variable: about
  4 at most for independent draws (a standard normal's extreme over the
  several hundred pairs); far above it, draws share random numbers.

Prints a summary, the flagged variables and the correlation extremes;
`--output FILE.json` keeps them with every variable's statistics. Exit
status 1 when a variable is flagged, 0 otherwise.
"""
import glob
import json
import math
import os
import shutil
import sys

import bench_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATISTICS = ('mean', 'std', 'kurtosis')


def _fail(message):
  bench_cli.fail(__file__, message)


def parse_seeds(text):
  """'4-18' or '4,5,9' (or both mixed) -> [4, ..., 18]."""
  seeds = []
  for part in text.split(','):
    low, _, high = part.strip().partition('-')
    if not low.isdigit() or (high and not high.isdigit()):
      raise ValueError(f'--seeds {text!r}: expected numbers and ranges '
                       "such as '4-18' or '4,5,9'")
    seeds.extend(range(int(low), int(high or low) + 1))
  return seeds


def upstream_checkpoints(text):
  """The checkpoint prefixes that `text`'s paths and patterns name."""
  found = []
  for part in filter(None, (p.strip() for p in text.split(','))):
    matches = sorted(glob.glob(part + '.index')) or sorted(glob.glob(part))
    found.extend(m[:-len('.index')] if m.endswith('.index') else m
                 for m in matches)
  return list(dict.fromkeys(found))


def parse_args(argv):
  parser = bench_cli.OneLineParser(__file__, __doc__)
  parser.add_argument('--config', help='a port run folder (its config.yaml '
                      'gives the model)')
  parser.add_argument('--seeds', default='0-4',
                      help="the port's seeds to draw, e.g. 4-18")
  parser.add_argument('--upstream', help="upstream's model.ckpt-0 files: "
                      'paths or quoted patterns, comma-separated')
  parser.add_argument('--max_t', type=float, default=5.0,
                      help="Welch's |t| above which a variable is flagged")
  parser.add_argument('--output', help='JSON file for the results')
  args = parser.parse_args(argv)
  bench_cli.check_run_folder(__file__, args.config)
  try:
    args.seeds = parse_seeds(args.seeds)
  except ValueError as e:
    _fail(str(e))
  if not args.upstream:
    _fail("--upstream is required: upstream's model.ckpt-0 files")
  args.checkpoints = upstream_checkpoints(args.upstream)
  missing = [c for c in args.checkpoints if not os.path.isfile(c + '.index')]
  if missing or not args.checkpoints:
    _fail(f'--upstream {args.upstream!r}: '
          + (f'{missing[0]} is not a checkpoint' if missing else
             'matches no checkpoint'))
  if len(args.seeds) < 3 or len(args.checkpoints) < 3:
    _fail('the comparison needs at least 3 draws on each side (--seeds '
          f'gives {len(args.seeds)}, --upstream {len(args.checkpoints)})')
  return args


# -- statistics ----------------------------------------------------------------
def draw_statistics(values):
  """(mean, std, kurtosis) of one draw of a variable (kurtosis 3 for a
  normal; 0 for a constant)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  values = np.asarray(values, np.float64).ravel()
  mean = float(values.mean())
  std = float(values.std())
  if std == 0:
    return mean, 0.0, 0.0
  kurtosis = float(np.mean(((values - mean) / std) ** 4))
  return mean, std, kurtosis


def welch_t(a, b):
  """Welch's t of two samples; 0 when both are constant and equal, inf
  when both are constant and differ."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  spread = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
  gap = a.mean() - b.mean()
  if spread == 0:
    return 0.0 if gap == 0 else math.inf
  return float(gap / math.sqrt(spread))


def largest_correlation(draws):
  """max |r| x sqrt(size) over pairs of equally sized arrays in `draws`
  (a list of 1-D arrays), with the pair's indices; (0, None) for none."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  best, where = 0.0, None
  for i, a in enumerate(draws):
    for j in range(i + 1, len(draws)):
      b = draws[j]
      if a.size != b.size or a.std() == 0 or b.std() == 0:
        continue
      z = abs(float(np.corrcoef(a, b)[0, 1])) * math.sqrt(a.size)
      if z > best:
        best, where = z, (i, j)
  return best, where


def compare(port, upstream, max_t):
  """`port` and `upstream`: {name: [one flat array per draw]}. Returns
  (rows by name, flagged names)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  rows, flagged = {}, []
  for name in sorted(port):
    sides = {side: np.array([draw_statistics(d) for d in draws[name]])
             for side, draws in (('port', port), ('upstream', upstream))}
    row = {'size': int(port[name][0].size)}
    for k, statistic in enumerate(STATISTICS):
      row[statistic] = {side: float(s[:, k].mean())
                        for side, s in sides.items()}
      row[statistic + '_t'] = welch_t(sides['port'][:, k],
                                      sides['upstream'][:, k])
    rows[name] = row
    if any(abs(row[s + '_t']) > max_t for s in STATISTICS):
      flagged.append(name)
  return rows, flagged


def correlations(draws_by_name):
  """Correlation extremes of one side: within a draw, between variables of
  the same size; and between draws of the same variable."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  names = sorted(draws_by_name)
  within = (0.0, None)
  for d in range(len(draws_by_name[names[0]])):
    flat = [np.asarray(draws_by_name[n][d], np.float64) for n in names]
    z, pair = largest_correlation(flat)
    if z > within[0]:
      within = (z, [names[pair[0]], names[pair[1]], d])
  across = (0.0, None)
  for name in names:
    z, pair = largest_correlation(
        [np.asarray(x, np.float64) for x in draws_by_name[name]])
    if z > across[0]:
      across = (z, [name, pair[0], pair[1]])
  return {'within_draw': within[0], 'within_draw_at': within[1],
          'across_draws': across[0], 'across_draws_at': across[1]}


# -- drawing and reading -------------------------------------------------------
def port_draws(config, seeds):
  """{upstream name: [the port's initial values, one per seed]} for the
  model of the run in `config`."""
  import stage_switch  # pylint: disable=import-outside-toplevel
  draws = {}
  for seed in seeds:
    trainer, work = stage_switch.port_trainer(config, seed)
    try:
      names = pretrained_names(trainer)
      for variable, name in names:
        draws.setdefault(name, []).append(variable.numpy().ravel())
    finally:
      shutil.rmtree(work, ignore_errors=True)
  return draws


def pretrained_names(trainer):
  """[(variable, upstream name)] of the model's variables."""
  from automl_effnetv2 import pretrained  # pylint: disable=import-outside-toplevel
  names = pretrained.upstream_variable_names(trainer.model)
  return [(v, names[v.path]) for v in trainer.model.weights
          if v.path in names]


def upstream_draws(checkpoints, names):
  """{name: [the value in each checkpoint]}, each name as that checkpoint
  spells it (`stage_switch.stored_name`)."""
  import stage_switch  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  draws = {}
  for path in checkpoints:
    reader = tf.train.load_checkpoint(path)
    stored = set(reader.get_variable_to_shape_map())
    for name in names:
      key = stage_switch.stored_name(name, stored)
      if key not in stored:
        _fail(f'--upstream: {path} has no variable {name!r}: is it a '
              "checkpoint of the same model as --config's?")
      draws.setdefault(name, []).append(reader.get_tensor(key).ravel())
  return draws


def run(args):
  port = port_draws(args.config, args.seeds)
  upstream = upstream_draws(args.checkpoints, sorted(port))
  for name in port:
    if port[name][0].size != upstream[name][0].size:
      _fail(f'--upstream: {name} has {upstream[name][0].size} values in '
            f'upstream\'s checkpoints and {port[name][0].size} in the port')
  rows, flagged = compare(port, upstream, args.max_t)
  extremes = {'port': correlations(port), 'upstream': correlations(upstream)}
  largest = {s: max(abs(r[s + '_t']) for r in rows.values())
             for s in STATISTICS}
  print(f'{len(rows)} variables; {len(args.seeds)} port draws (seeds '
        f'{args.seeds[0]}-{args.seeds[-1]}), {len(args.checkpoints)} of '
        "upstream's")
  print("largest Welch |t|, port against upstream: " + ', '.join(
      f'{s} {largest[s]:.1f}' for s in STATISTICS))
  for side, e in extremes.items():
    print(f'{side}: largest |r| x sqrt(size) within a draw '
          f"{e['within_draw']:.1f}, across draws {e['across_draws']:.1f}")
  for name in flagged:
    row = rows[name]
    print(f'flagged: {name} (' + ', '.join(
        f"{s} {row[s]['port']:.4g} / {row[s]['upstream']:.4g}, "
        f"t {row[s + '_t']:.1f}" for s in STATISTICS) + ')')
  print(f'{len(flagged)} variable(s) flagged at |t| > {args.max_t:g}')
  if args.output:
    with open(args.output, 'w', encoding='utf-8') as f:
      json.dump({'seeds': args.seeds, 'upstream': args.checkpoints,
                 'max_t': args.max_t, 'flagged': flagged,
                 'largest_t': largest, 'correlations': extremes,
                 'variables': rows}, f, indent=1)
  return 1 if flagged else 0


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  sys.path.insert(0, REPO)
  return run(args)


if __name__ == '__main__':
  sys.exit(main())
