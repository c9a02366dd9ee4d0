"""Statistics for the progressive-learning study, as pure functions.

Student-t quantiles come from the regularized incomplete beta function (no
SciPy dependency); time to a target accuracy is read off an eval curve by
linear interpolation; ratios get percentile-bootstrap intervals over seeds.
"""
import math
import random
import statistics
from typing import Callable, List, Optional, Sequence, Tuple


# -- Student's t ----------------------------------------------------------------
def _incomplete_beta_fraction(a: float, b: float, x: float) -> float:
  """Continued fraction of the regularized incomplete beta (Lentz)."""
  tiny = 1e-300
  c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
  d = 1.0 / (d if abs(d) > tiny else tiny)
  result = d
  for m in range(1, 500):
    for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                      -(a + m) * (a + b + m) * x / ((a + 2 * m) *
                                                   (a + 2 * m + 1))):
      d = 1.0 + numerator * d
      d = 1.0 / (d if abs(d) > tiny else tiny)
      c = 1.0 + numerator / c
      c = c if abs(c) > tiny else tiny
      result *= d * c
    if abs(d * c - 1.0) < 1e-15:
      break
  return result


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
  """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
  if x <= 0.0:
    return 0.0
  if x >= 1.0:
    return 1.0
  log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) +
               a * math.log(x) + b * math.log1p(-x))
  # The fraction converges fast on the side of the mean; use symmetry.
  if x < (a + 1.0) / (a + b + 2.0):
    return math.exp(log_front) * _incomplete_beta_fraction(a, b, x) / a
  return 1.0 - math.exp(log_front) * _incomplete_beta_fraction(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
  """P(T <= t) for Student's t with `df` degrees of freedom."""
  tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
  return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
  """The t with P(T <= t) = p, by bisection on `t_cdf`."""
  if not 0.0 < p < 1.0:
    raise ValueError(f'p={p} must lie strictly between 0 and 1')
  if p < 0.5:
    return -t_quantile(1.0 - p, df)
  low, high = 0.0, 1.0
  while t_cdf(high, df) < p:
    high *= 2.0
  for _ in range(200):
    mid = 0.5 * (low + high)
    if t_cdf(mid, df) < p:
      low = mid
    else:
      high = mid
  return 0.5 * (low + high)


def mean_ci(values: Sequence[float],
            level: float = 0.95) -> Tuple[float, float, Optional[float],
                                          Optional[float]]:
  """(mean, sample std, CI low, CI high) by the t distribution.

  With one value the std is 0 and the interval is unknown (None, None).
  """
  values = [float(v) for v in values]
  if not values:
    raise ValueError('no values')
  mean = statistics.mean(values)
  if len(values) < 2:
    return mean, 0.0, None, None
  std = statistics.stdev(values)
  half = t_quantile(0.5 + level / 2.0, len(values) - 1) * std / math.sqrt(
      len(values))
  return mean, std, mean - half, mean + half


# -- curves -----------------------------------------------------------------
def time_to_target(curve: Sequence[Tuple[float, float]],
                   target: float) -> Optional[float]:
  """The first time a curve of (time, accuracy) points reaches `target`.

  The curve starts at (0, 0) (nothing trained, nothing right) and runs
  straight between its points, so the crossing is interpolated linearly
  inside the segment where it happens. None when it never gets there.
  """
  previous = (0.0, 0.0)
  for point in sorted(curve):
    time, accuracy = point
    if accuracy >= target:
      if accuracy == previous[1]:
        return time
      fraction = (target - previous[1]) / (accuracy - previous[1])
      fraction = min(max(fraction, 0.0), 1.0)
      return previous[0] + fraction * (time - previous[0])
    previous = point
  return None


def mean_curve(curves: Sequence[Sequence[Tuple[float, float]]]
               ) -> List[Tuple[float, float]]:
  """Point-wise mean of curves evaluated at the same steps.

  Curves of one config and mode share their eval steps; if one is shorter
  (a run in progress), the mean covers the common part.
  """
  length = min(len(c) for c in curves)
  count = len(curves)
  return [(sum(c[i][0] for c in curves) / count,
           sum(c[i][1] for c in curves) / count) for i in range(length)]


# -- bootstrap ----------------------------------------------------------------
def bootstrap_ci(statistic: Callable[..., Optional[float]],
                 num_seeds: int, level: float = 0.95, resamples: int = 4000,
                 seed: int = 0, also_drawn: Optional[Sequence] = None
                 ) -> Tuple[Optional[float], Optional[float]]:
  """Percentile interval of `statistic(seed_indices)` over resampled seeds.

  `statistic` receives a list of seed indices drawn with replacement (the
  same draw for every mode, so runs that shared a seed and a time slot stay
  paired) and may return None where the statistic is undefined; those draws
  are left out. Fewer than two seeds give no interval.

  `also_drawn`: one more random input per resample (for example step times
  redrawn from a benchmark's rounds), passed as the second argument, so that
  the interval carries that uncertainty too.
  """
  if num_seeds < 2:
    return None, None
  rng = random.Random(seed)
  values = []
  for index in range(resamples):
    draw = [rng.randrange(num_seeds) for _ in range(num_seeds)]
    value = (statistic(draw) if also_drawn is None else
             statistic(draw, also_drawn[index % len(also_drawn)]))
    if value is not None and math.isfinite(value):
      values.append(value)
  if not values:
    return None, None
  values.sort()
  tail = (1.0 - level) / 2.0
  return (_percentile(values, tail), _percentile(values, 1.0 - tail))


def _percentile(sorted_values: List[float], q: float) -> float:
  """Linear interpolation between closest ranks (numpy's default)."""
  position = q * (len(sorted_values) - 1)
  low = math.floor(position)
  high = min(low + 1, len(sorted_values) - 1)
  weight = position - low
  return sorted_values[low] * (1 - weight) + sorted_values[high] * weight


def paired_difference_ci(a: Sequence[float], b: Sequence[float],
                         level: float = 0.95):
  """mean(a - b) and its t interval over pairs (a_k, b_k)."""
  if len(a) != len(b):
    raise ValueError(f'unpaired samples: {len(a)} and {len(b)} values')
  mean, _, low, high = mean_ci([x - y for x, y in zip(a, b)], level)
  return mean, low, high
