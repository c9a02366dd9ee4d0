"""How long a run of the study takes, on the clocks the report uses.

measured     seconds the run spent in its training loops (metrics.json);
normalized   the steps it trained at each image size times the seconds per
             step at that size from one paired benchmark (step_times.json),
             so that a machine busy with something else cannot fake a speedup;
multiply-adds  the steps at each size times the batch times the model's
             multiply-adds per image at that size (multiply_adds.json): the
             clock of hardware whose cost follows arithmetic.

Also: the length at which one run's normalized time equals another's (the
study's equal-time runs), and step times redrawn from the benchmark's rounds
(the normalized clock's own uncertainty).
"""
import random
import statistics
from typing import Dict, List, Optional, Sequence

from automl_effnetv2 import progressive

STEP_TIMES = 'step_times.json'
MULTIPLY_ADDS = 'multiply_adds.json'


def steps_per_size(stages, step: int) -> Dict[int, int]:
  """Steps 0..step of a run, counted per image size."""
  counts, start = {}, 0
  for stage in stages:
    steps = max(0, min(step, stage.max_steps) - start)
    if steps:
      counts[stage.image_size] = counts.get(stage.image_size, 0) + steps
    start = stage.max_steps
  return counts


def clock_seconds(stages, step: int, cost_per_step: Dict[str, float],
                  source: str = STEP_TIMES, what: str = 'step time') -> float:
  """Steps 0..step of a run weighed by a per-size cost (keyed by str(size))."""
  total = 0.0
  for size, steps in steps_per_size(stages, step).items():
    if str(size) not in cost_per_step:
      raise ValueError(f'no {what} for {size} px in {source}; delete it to '
                       'measure again')
    total += steps * cost_per_step[str(size)]
  return total


def normalized_seconds(stages, step: int,
                       seconds_per_step: Dict[str, float]) -> float:
  """Benchmark seconds for steps 0..step under a run's stages."""
  return clock_seconds(stages, step, seconds_per_step)


def multiply_adds(stages, step: int, per_image: Dict[str, float],
                  batch_size: int) -> float:
  """Forward multiply-adds of steps 0..step (batch images a step)."""
  return batch_size * clock_seconds(stages, step, per_image, MULTIPLY_ADDS,
                                    'multiply-add count')


# -- equal normalized time ------------------------------------------------------
def equal_time_steps(config, target_seconds: float,
                     seconds_per_step: Dict[str, float]) -> int:
  """Total steps whose run (the config's stages stretched over them) comes
  closest to `target_seconds` of normalized time.

  A run's normalized time rises strictly with its length: one more step adds
  at least one step at the smallest size (moving a stage boundary only
  shifts steps towards smaller, cheaper sizes by less than it adds), so a
  bisection finds the crossing.
  """
  def seconds(steps):
    return normalized_seconds(progressive.run_plan(config, steps).stages,
                              steps, seconds_per_step)

  if target_seconds <= 0:
    raise ValueError(f'target time must be positive, got {target_seconds}')
  high = 1
  while seconds(high) < target_seconds:
    high *= 2
  low = high // 2 + 1 if high > 1 else 1
  while low < high:  # Smallest length reaching the target.
    middle = (low + high) // 2
    if seconds(middle) >= target_seconds:
      high = middle
    else:
      low = middle + 1
  if low > 1 and (target_seconds - seconds(low - 1) <=
                  seconds(low) - target_seconds):
    return low - 1
  return low


def epochs_for_steps(steps: int, num_images: int, batch_size: int) -> float:
  """Epochs that upstream's step count (int(epochs * images) // batch)
  turns into exactly `steps`: half a batch past the boundary, so rounding
  the printed value cannot cross it."""
  epochs = (steps * batch_size + batch_size / 2) / num_images
  epochs = float(f'{epochs:.6g}')
  if progressive.train_steps(epochs, num_images, batch_size) != steps:
    raise ValueError(f'{steps} steps of {batch_size} images of {num_images} '
                     'cannot be written as epochs to 6 digits')
  return epochs


def equal_time_epochs(config, reference, seconds_per_step) -> float:
  """Epochs for `config` so that its normalized training time equals that
  of `reference` (another assembled config, e.g. the same recipe without
  progressive learning) at its own length."""
  plan = progressive.run_plan(reference)
  target = normalized_seconds(plan.stages, plan.total_steps, seconds_per_step)
  steps = equal_time_steps(config, target, seconds_per_step)
  train = config.train
  if train.min_steps and train.min_steps > steps:
    raise ValueError(f'train.min_steps={train.min_steps} is longer than the '
                     f'equal-time length ({steps} steps); set it to 0')
  num_images = config.data.splits[train.split or 'train'].num_images
  return epochs_for_steps(steps, num_images, train.batch_size)


# -- the benchmark's own spread -------------------------------------------------
def redrawn_step_times(step_times: Dict, rng: random.Random
                       ) -> Dict[str, float]:
  """Seconds per step at each size, from the benchmark's rounds drawn with
  replacement. A round timed every size in turn, so the same rounds are
  drawn for every size: a slow spell of the machine stays paired."""
  samples = step_times['samples']
  rounds = len(next(iter(samples.values())))
  draw = [rng.randrange(rounds) for _ in range(rounds)]
  return {size: statistics.median(values[i] for i in draw)
          for size, values in samples.items()}


def step_time_draws(step_times: Dict, count: int, seed: int = 0
                    ) -> Optional[List[Dict[str, float]]]:
  """`count` redrawn step-time tables; None for a benchmark file without
  its rounds (nothing to redraw)."""
  if 'samples' not in step_times:
    return None
  rng = random.Random(seed)
  return [redrawn_step_times(step_times, rng) for _ in range(count)]


def format_steps(counts: Dict[int, int]) -> str:
  """'48:1712 56:1713 64:1713', the per-size step counts as a CSV cell."""
  return ' '.join(f'{size}:{steps}' for size, steps in sorted(counts.items()))


def parse_steps(text: str) -> Dict[str, int]:
  return {size: int(steps) for size, steps in
          (item.split(':') for item in (text or '').split())}


def weighed(steps: Dict[str, int], cost_per_step: Dict[str, float]) -> float:
  """Steps counted per size (parse_steps) times a per-size cost."""
  return sum(count * cost_per_step[size] for size, count in steps.items())


def sizes_of(stage_lists: Sequence[Sequence[progressive.Stage]]) -> List[int]:
  return sorted({stage.image_size for stages in stage_lists
                 for stage in stages})
