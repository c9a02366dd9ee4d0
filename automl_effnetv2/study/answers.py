"""The study's answers from several result folders in one table.

One study answers at equal epochs, another gives progressive learning the
epochs its cheaper steps buy (`--equal_time_to`), a third trains longer.
Each has its own report (report.py); this module sets their
progressive-learning rows side by side, every number on the three clocks
with its 95 % interval, and writes the table into a markdown file between

  <!-- begin: answers -->
  <!-- end: answers -->

so that a document's first table is rebuilt from the committed per-run
files with the reports (`ablation --report_only --combine=... --answers_to=...`).
"""
import os
import re
from typing import Dict, List, Optional, Sequence

from automl_effnetv2.study import report
# The report's own row filter and number formats, so both tables read alike.
from automl_effnetv2.study.report import _by, _interval, _num, _ordered  # pylint: disable=g-multiple-import

BEGIN = '<!-- begin: answers -->'
END = '<!-- end: answers -->'


def _epochs(rows, config, mode) -> Optional[float]:
  values = {float(r['epochs']) for r in _by(rows, config, mode)}
  return values.pop() if len(values) == 1 else None


def _length(rows, config, command: str) -> str:
  """'equal epochs: 10' or 'equal normalized time: 10.96 against 10
  epochs', from the finished runs, or from the command before any."""
  mine = _epochs(rows, config, report.PROGRESSIVE)
  base = _epochs(rows, config, report.BASELINE)
  if '--equal_time_to' in command:
    if mine is None or base is None:
      return 'equal normalized time'
    return f'equal normalized time: {mine:.4g} against {base:.4g} epochs'
  if mine is None:
    planned = re.search(r'--epochs[= ](\S+)', command)
    return f'equal epochs: {planned.group(1)}' if planned else 'equal epochs'
  return f'equal epochs: {mine:.4g}'


def study_answers(results_dir) -> List[Dict[str, object]]:
  """One entry per config of a study: its length, the number of finished
  and planned seeds, and `none` against `no_progressive` from
  report.compare_to_baseline (None while no seed has both)."""
  plan = report.read_json(os.path.join(results_dir, report.PLAN))
  if not plan:
    return []
  rows = report.read_csv(os.path.join(results_dir, 'results.csv'))
  curves = report.read_csv(os.path.join(results_dir, 'curves.csv'))
  step_times = report.read_json(
      os.path.join(results_dir, report.STEP_TIMES)) or None
  answers = []
  cells = plan.get('cells', [])
  for config in _ordered(c['config'] for c in cells):
    planned = {c['seed'] for c in cells if c['config'] == config}
    comparison = report.compare_to_baseline(
        rows, curves, config,
        (report.BASELINE, report.PROGRESSIVE), step_times)
    entry = comparison.get(report.PROGRESSIVE)
    answers.append(dict(
        study=results_dir, config=config,
        length=_length(rows, config, plan.get('command', '')),
        planned=len(planned),
        entry=entry, target=comparison.get('_target')))
  return answers


def _clock_cells(entry, name) -> List[str]:
  out = []
  for clock in report.CLOCKS:
    value = entry.get(f'{name}_{clock}') if entry else None
    out.append('–' if value is None else
               f"{_num(value, 2, 'x')} "
               f"{_interval(entry.get(f'{name}_{clock}_ci'))}")
  return out


def answers_table(results_dirs: Sequence[str]) -> List[str]:
  """The markdown table: one row per study and config."""
  def per_clock(what):
    return ' | '.join(f'{what}: {clock}' for clock in report.CLOCKS)
  lines = [
      f'Progressive learning (`{report.PROGRESSIVE}`) against '
      f'`{report.BASELINE}` (64 px and the final regularization '
      'throughout), paired by seed; 95 % intervals in brackets (paired t for '
      'top-1, percentile bootstrap over seeds for time ratios, on the '
      "normalized clock with the step-time benchmark's rounds redrawn too). "
      'A time ratio is `no_progressive`\'s training time over progressive '
      "learning's: above 1, progressive learning was faster. The target is "
      'the lower of the two final mean top-1s.', '',
      '| study | config | seeds | top-1 difference (points) | '
      f"{per_clock('time ratio')} | {per_clock('speedup to target')} |",
      '|---|---|---|---|' + '---|' * (2 * len(report.CLOCKS))]
  for results_dir in results_dirs:
    answers = study_answers(results_dir)
    if not answers:
      cols = [f'not started (`{results_dir}`)'] + ['–'] * (
          3 + 2 * len(report.CLOCKS))
      lines.append('| ' + ' | '.join(cols) + ' |')
      continue
    for answer in answers:
      entry = answer['entry']
      seeds = entry['seeds'] if entry else 0
      top1 = ('–' if not entry or entry['top1_diff'] is None else
              f"{entry['top1_diff']:+.2f} "
              f"{_interval(entry['top1_diff_ci'])}")
      cols = ([f"{answer['length']} (`{results_dir}`)", answer['config'],
               f"{seeds} of {answer['planned']}", top1] +
              _clock_cells(entry, 'epochs') + _clock_cells(entry, 'target'))
      lines.append('| ' + ' | '.join(cols) + ' |')
  return lines


def write_answers(markdown_path: str, results_dirs: Sequence[str]
                  ) -> List[str]:
  """Replaces the answers block of `markdown_path` with the table."""
  with open(markdown_path, encoding='utf-8') as f:
    text = f.read()
  pattern = re.compile(re.escape(BEGIN) + '.*?' + re.escape(END), re.S)
  if not pattern.search(text):
    raise ValueError(f'{markdown_path} has no answers block: add a line '
                     f'{BEGIN} and a line {END} where the table goes')
  lines = answers_table(results_dirs)
  block = '\n'.join([BEGIN] + lines + [END])
  text = pattern.sub(lambda _: block, text, count=1)
  tmp = markdown_path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, markdown_path)
  return lines
