r"""Writes the Fashion-MNIST study's change into a google/automl checkout.

  python patches/patchset.py upstream PATH

PATH is the root of a google/automl checkout or its `efficientnetv2/`
folder, at commit a6bb1ff457399e7360dcc39d7e855fc0e51f5da1 (the last change
to that folder). Nothing of upstream is stored here: each edit finds its
place in the user's file by a short anchor (one or a few exact lines that
must occur exactly once) and inserts or replaces text there.

In a git repository every step below becomes one commit; elsewhere the files
are edited in place and each step's diff is saved as a numbered patch file in
`fashion-mnist-study-patches/` beside `efficientnetv2/`.

Every edit of every step is checked in memory before anything is written. A
missing or repeated anchor, a step that is half there, an inserted block
that was edited afterwards, or uncommitted changes to the files to be edited
stop the tool with one line and a non-zero exit, and nothing is written. A
second application finds every block in place and does nothing.
"""
import ast
import dataclasses
import difflib
import os
import subprocess
import sys
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
UPSTREAM_COMMIT = 'a6bb1ff457399e7360dcc39d7e855fc0e51f5da1'
RECIPE = os.path.join(REPO, 'automl_effnetv2', 'recipes', 'fashion_mnist.yaml')
PATCH_FOLDER = 'fashion-mnist-study-patches'
PACKAGE = 'efficientnetv2'


class Refused(Exception):
  """The checkout cannot take the change; the message is the one line."""


@dataclasses.dataclass(frozen=True)
class Edit:
  """One text change in one file of efficientnetv2/.

  where: 'before' or 'after' the anchor (text is inserted), or 'replace'
  (the anchor is replaced by text). The first non-blank line of `text` is its
  signature: it must not occur in upstream, so finding it means the edit is
  already there.
  """
  path: str
  anchor: str
  where: str
  text: str

  @property
  def signature(self) -> str:
    return next(line for line in self.text.splitlines() if line.strip())


@dataclasses.dataclass(frozen=True)
class Step:
  slug: str
  subject: str
  body: str
  edits: Tuple[Edit, ...]


def _block(text: str) -> str:
  """A block as inserted: without the newline that follows the quotes."""
  text = text[1:] if text.startswith('\n') else text
  return text if text.endswith('\n') else text + '\n'


def _count_lines(haystack: str, block: str) -> int:
  """How often `block` (whole lines) occurs in `haystack` at line starts."""
  count, start = 0, 0
  while True:
    found = haystack.find(block, start)
    if found < 0:
      return count
    if found == 0 or haystack[found - 1] == '\n':
      count += 1
    start = found + 1


def _signature_present(haystack: str, signature: str) -> bool:
  return any(line.rstrip() == signature.rstrip()
             for line in haystack.splitlines())


# -- the change ----------------------------------------------------------------
# Each block is inserted exactly as written (the newline after the opening
# quotes is not part of it). Its first non-blank line is its signature and
# occurs nowhere upstream.
FASHION_MNIST_INPUT = """
class FashionMNISTInput(CIFAR10Input):
  \"\"\"Fashion-MNIST from tfds: 28x28 grayscale clothing images, 10 classes.

  Preprocessing and the network take three channels, so the one gray channel
  is repeated to RGB before the shared preprocessing. The prepared tfds copy
  is read from --data_dir, else from TFDS_DATA_DIR or ~/tensorflow_datasets.
  \"\"\"
  cfg = copy.deepcopy(CIFAR10Input.cfg)
  cfg.update(
      dict(
          num_classes=10,
          tfds_name='fashion_mnist',
          try_gcs=False,
          splits=dict(
              train=dict(num_images=60000, tfds_split='train', slice=''),
              minival=dict(num_images=10000, tfds_split='test', slice=''),
              eval=dict(num_images=10000, tfds_split='test', slice=''),
          )))

  def preprocess(self, features):
    \"\"\"Gray to RGB, then CIFAR10Input's preprocessing.\"\"\"
    features = dict(features)
    features['image'] = tf.image.grayscale_to_rgb(features['image'])
    return super().preprocess(features)


"""

FASHION_MNIST_ENTRY = """
      'fashion_mnist': FashionMNISTInput,
"""

FASHION_MNIST_FT = """


# Fashion-MNIST, the reproducibility study's dataset.
@ds_register
class FashionMNISTFt(Cifar10Ft):
  \"\"\"Finetune Fashion-MNIST configs: Cifar10Ft's values.\"\"\"
  cfg = copy.deepcopy(Cifar10Ft.cfg)
  cfg.data.override(dict(ds_name='fashion_mnist'))
"""

ABLATION_FLAG = """

# Ablations of progressive learning. Stage boundaries (steps) never change.
ABLATIONS = ('none', 'no_progressive', 'fixed_image_size',
             'fixed_regularization', 'constant_weight_decay')
flags.DEFINE_enum(
    'ablation', 'none', ABLATIONS,
    'fixed_image_size: every stage trains at the final image size; '
    'fixed_regularization: every stage uses the final RandAugment magnitude, '
    'mixup and cutmix; no_progressive: both; constant_weight_decay: '
    'train.weight_decay_inc=0 (no weight-decay ramp); none: as configured.')
"""

ABLATION_CONFIG = """
  config.train.ablation = FLAGS.ablation  # Recorded in config.yaml.
  if FLAGS.ablation == 'constant_weight_decay':
    config.train.weight_decay_inc = 0.0  # model_fn's ramp becomes flat.
"""

ABLATION_STAGES = """
          # --ablation: hold image size and/or regularization at the last
          # stage's values.
          if FLAGS.ablation in ('fixed_image_size', 'no_progressive'):
            image_size = input_image_size
            params['image_size'] = image_size
          if config.train.sched and FLAGS.ablation in ('fixed_regularization',
                                                       'no_progressive'):
            config.data.ram = ram_list[-1]
            config.data.mixup_alpha = mixup_list[-1]
            config.data.cutmix_alpha = cutmix_list[-1]
"""

FLOAT32_ON_CPU = """
  # float16 on a CPU runs at under 1 image/s: use float32 there.
  if (config.runtime.mixed_precision and not FLAGS.use_tpu and
      not tf.config.list_physical_devices('GPU')):
    logging.warning('No GPU and no TPU: runtime.mixed_precision=False.')
    config.runtime.mixed_precision = False

"""

BN_UPDATES = """
    # Keras 2 layers no longer put their batch-norm moving-statistics updates
    # into UPDATE_OPS, which train_op depends on; without these lines the
    # moving mean and variance keep their initial values.
    if is_training:
      for update in model.updates:
        tf.add_to_collection(tf.GraphKeys.UPDATE_OPS, update)
"""

TFDS_DATA_DIR = """
    # data_dir: --data_dir, else TFDS_DATA_DIR or ~/tensorflow_datasets.
    ds = tfds.load(
        self.cfg.tfds_name, split=self.cfg.splits[self.split]['tfds_split'],
        try_gcs=self.cfg.try_gcs, data_dir=self.data_dir)
"""

NO_SILENT_NULL_INPUT = """
    # All-zero images only when asked for with --data_dir=null.
    if not self.data_dir:
      raise ValueError(
          f'{type(self).__name__} reads TFRecord files and --data_dir is not '
          'set: pass --data_dir=<folder of the files>, or --data_dir=null to '
          'train on all-zero images on purpose.')
    if self.data_dir == 'null':
      logging.info('data_dir=null: all-zero images')
"""


def _steps(recipe_block: str) -> List[Step]:
  d, m = 'datasets.py', 'main.py'
  return [
      Step('fashion-mnist-input',
           'Fashion-MNIST input: FashionMNISTInput, gray to RGB',
           'tfds fashion_mnist (60000 train / 10000 test images, 10 classes); '
           'the one gray channel is repeated to three before preprocessing, '
           'whose set_shape([None, None, 3]) refuses one channel. Registered '
           "as 'fashion_mnist' in get_dataset_class.",
           (Edit(d, 'def get_dataset_class(ds_name):', 'before',
                 FASHION_MNIST_INPUT),
            Edit(d, "      'cars': CarsInput,", 'after',
                 FASHION_MNIST_ENTRY))),
      Step('fashion-mnist-configs',
           'Fashion-MNIST training configs: FashionMNISTFt, fashion_mnist',
           "FashionMNISTFt is Cifar10Ft's fine-tuning values on Fashion-MNIST "
           '(min_steps=10000 included). fashion_mnist trains B0 from scratch '
           'with progressive learning; its values come from the TF2 port\'s '
           'recipe fashion_mnist.yaml.',
           (Edit(d, "  cfg.data.override(dict(ds_name='cars'))", 'after',
                 FASHION_MNIST_FT + recipe_block),)),
      Step('ablation-flag',
           '--ablation: switch off parts of progressive learning',
           'Modes none, no_progressive, fixed_image_size, '
           'fixed_regularization, constant_weight_decay, as in the TF2 '
           "port's progressive.py: the stage loop holds the image size and/or "
           "the regularization at the last stage's values; "
           'constant_weight_decay sets train.weight_decay_inc to 0.',
           (Edit(m, "flags.DEFINE_bool('export_to_tpu', False, "
                 "'Export metagraph.')", 'after', ABLATION_FLAG),
            Edit(m, '  config.override(FLAGS.sweeps)', 'after',
                 ABLATION_CONFIG),
            Edit(m, '          ds_lab_cls = datasets.build_dataset_input('
                 'True, image_size,', 'before', ABLATION_STAGES))),
      Step('fix-float32-on-cpu',
           'Fix: train in float32 without a GPU or TPU',
           'The default runtime.mixed_precision=True builds a float16 model '
           'off TPU; a CPU runs it at under 1 image/s.',
           (Edit(m, '  train_size = config.train.isize', 'before',
                 FLOAT32_ON_CPU),)),
      Step('fix-batch-norm-updates',
           'Fix: batch-norm moving statistics never update',
           "Under TF 2.15's Keras 2, tf.get_collection(UPDATE_OPS) is empty, "
           'so the moving mean and variance stay at 0 and 1 and evaluation '
           "sits at chance. Collect the model's updates into UPDATE_OPS.",
           (Edit(m, '    logits = model(in_images, training=is_training)',
                 'after', BN_UPDATES),)),
      Step('fix-tfds-data-dir',
           'Fix: tfds inputs read --data_dir',
           'CIFAR10Input and its subclasses called tfds.load without '
           'data_dir, so --data_dir was ignored and only TFDS_DATA_DIR '
           'chose the folder.',
           (Edit(d, "    ds = tfds.load(\n"
                 "        self.cfg.tfds_name, split=self.cfg.splits"
                 "[self.split]['tfds_split'], try_gcs=self.cfg.try_gcs)",
                 'replace', TFDS_DATA_DIR),)),
      Step('fix-null-input',
           'Fix: no silent training on all-zero images',
           'ImageNetInput and its subclasses trained on all-zero images with '
           'all-zero labels when --data_dir was not given; now only '
           '--data_dir=null does that.',
           (Edit(d, "    if self.data_dir == 'null' or not self.data_dir:\n"
                 "      logging.info('Undefined data_dir implies null input')",
                 'replace', NO_SILENT_NULL_INPUT),)),
  ]


# -- the recipe as upstream config code ----------------------------------------
def upstream_config_keys(hparams_text: str) -> Dict[str, List[str]]:
  """{section: [keys]} of `base_config = Config(...)` in upstream hparams.py."""
  try:
    tree = ast.parse(hparams_text)
  except SyntaxError as e:
    raise Refused(f'{PACKAGE}/hparams.py does not parse ({e.msg}, line '
                  f'{e.lineno}); restore it from commit {UPSTREAM_COMMIT[:7]}')
  for node in tree.body:
    if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
        isinstance(node.targets[0], ast.Name) and
        node.targets[0].id == 'base_config' and
        isinstance(node.value, ast.Call)):
      sections = {}
      for keyword in node.value.keywords:
        if isinstance(keyword.value, ast.Call):
          sections[keyword.arg] = [k.arg for k in keyword.value.keywords]
      return sections
  raise Refused(f'{PACKAGE}/hparams.py has no anchor "base_config = Config(" '
                f'(expected at commit {UPSTREAM_COMMIT[:7]}); nothing written')


def load_recipe(path: str = RECIPE) -> dict:
  try:
    import yaml  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise Refused('PyYAML is missing: pip install pyyaml, then run again')
  if not os.path.isfile(path):
    raise Refused(f'recipe {path} is missing: restore it from the repository')
  with open(path, encoding='utf-8') as f:
    return yaml.safe_load(f)


def recipe_block(recipe: dict, keys: Dict[str, List[str]]) -> str:
  """The `fashion_mnist` config class for upstream's datasets.py.

  Keys upstream's base_config lacks (the port's own augmentation settings)
  are left out and named in the class docstring.
  """
  kept, dropped = {}, []
  for section, values in recipe.items():
    for key, value in values.items():
      if key in keys.get(section, ()):
        kept.setdefault(section, {})[key] = value
      else:
        dropped.append(f'{section}.{key}')
  lines = [
      '',
      '',
      'class FashionMNIST():',
      '  """Fashion-MNIST from scratch: B0, progressive learning to 64 px.',
      '',
      "  Generated from the TF2 port's recipe fashion_mnist.yaml.",
  ]
  if dropped:
    lines += textwrap.wrap(
        'Left out (upstream has no such keys): ' + ', '.join(dropped) + '.',
        width=78, initial_indent='  ', subsequent_indent='  ')
  lines += ['  """', '  cfg = hparams.Config(']
  for section, values in kept.items():
    lines.append(f'      {section}=dict(')
    for key, value in values.items():
      lines.append(f'          {key}={value!r},')
    lines.append('      ),')
  lines += [
      '  )',
      '',
      '',
      "# Registered by hand: ds_register would name it 'fashionmnist'.",
      "hparams.registry_map['ds:fashion_mnist'] = FashionMNIST",
  ]
  return '\n'.join(lines) + '\n'


# -- planning: every edit checked in memory before anything is written ---------
@dataclasses.dataclass
class Plan:
  root: str            # folder that holds efficientnetv2/
  package: str         # the efficientnetv2/ folder
  originals: Dict[str, str]
  # (number, step, {file: text before}, {file: text after}), steps to apply
  pending: List[Tuple[int, Step, Dict[str, str], Dict[str, str]]]
  already: List[Step]


def find_package(path: str) -> str:
  path = os.path.abspath(os.path.expanduser(path))
  for candidate in (os.path.join(path, PACKAGE), path):
    if all(os.path.isfile(os.path.join(candidate, f))
           for f in ('main.py', 'datasets.py', 'hparams.py')):
      return candidate
  raise Refused(
      f'{path} is not a google/automl checkout: neither it nor '
      f'{os.path.join(path, PACKAGE)} holds main.py, datasets.py and '
      'hparams.py; pass the repository root or its efficientnetv2/ folder')


def _apply_edit(text: str, edit: Edit, shown: str) -> Tuple[str, bool]:
  """(new text, changed); raises Refused when the file is not as expected."""
  block = _block(edit.text)
  anchor = edit.anchor + '\n'
  anchor_shown = edit.anchor.splitlines()[0].strip()
  if _count_lines(text, block) == 1:
    return text, False
  if _signature_present(text, edit.signature):
    raise Refused(
        f'{shown}: the block starting "{edit.signature.strip()}" is there but '
        'differs from what this tool writes now (edited after applying, or '
        'the recipe changed); revert that commit to apply again; nothing '
        'written')
  found = _count_lines(text, anchor)
  if found != 1:
    problem = 'has no' if found == 0 else f'has {found} copies of the'
    raise Refused(
        f'{shown} {problem} anchor "{anchor_shown}" (expected once, as at '
        f'google/automl {UPSTREAM_COMMIT[:7]}); nothing written')
  at = next(i for i in range(len(text))
            if text.startswith(anchor, i) and (i == 0 or text[i - 1] == '\n'))
  if edit.where == 'before':
    new = text[:at] + block + text[at:]
  elif edit.where == 'after':
    end = at + len(anchor)
    new = text[:end] + block + text[end:]
  elif edit.where == 'replace':
    new = text[:at] + block + text[at + len(anchor):]
  else:
    raise ValueError(edit.where)
  return new, True


def plan(path: str, recipe: Optional[dict] = None) -> Plan:
  package = find_package(path)
  root = os.path.dirname(package)
  rel = lambda name: os.path.relpath(os.path.join(package, name), root)
  originals = {}
  for name in ('datasets.py', 'main.py', 'hparams.py'):
    with open(os.path.join(package, name), encoding='utf-8') as f:
      originals[name] = f.read()
  keys = upstream_config_keys(originals['hparams.py'])
  block = recipe_block(load_recipe() if recipe is None else recipe, keys)
  current = dict(originals)
  pending, already = [], []
  for index, step in enumerate(_steps(block), start=1):
    before = {e.path: current[e.path] for e in step.edits}
    changed = []
    for edit in step.edits:
      current[edit.path], did = _apply_edit(current[edit.path], edit,
                                            rel(edit.path))
      changed.append(did)
    if all(changed):
      pending.append((index, step, before, {p: current[p] for p in before}))
    elif not any(changed):
      already.append(step)
    else:
      raise Refused(
          f'{rel(step.edits[0].path)}: step "{step.subject}" is only partly '
          'there; revert its blocks (or the file) to apply it; nothing written')
  return Plan(root, package, originals, pending, already)


# -- writing -------------------------------------------------------------------
def _git(cwd: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
  result = subprocess.run(('git',) + args, cwd=cwd, capture_output=True,
                          text=True, check=False)
  if check and result.returncode:
    last = (result.stderr.strip().splitlines() or ['no message'])[-1]
    raise Refused(f'git {" ".join(args[:2])} failed in {cwd}: {last}')
  return result


def git_toplevel(folder: str) -> Optional[str]:
  try:
    result = subprocess.run(['git', 'rev-parse', '--show-toplevel'], cwd=folder,
                            capture_output=True, text=True, check=False)
  except FileNotFoundError:
    return None
  return result.stdout.strip() if result.returncode == 0 else None


def _write(path: str, text: str):
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)


def _unified(root: str, package: str, before: Dict[str, str],
             after: Dict[str, str]) -> str:
  out = []
  for name in before:
    rel = os.path.relpath(os.path.join(package, name), root)
    out.append(f'diff --git a/{rel} b/{rel}\n')
    out.extend(difflib.unified_diff(
        before[name].splitlines(True), after[name].splitlines(True),
        fromfile=f'a/{rel}', tofile=f'b/{rel}', n=3))
  return ''.join(out)


def write_commits(p: Plan, top: str) -> List[str]:
  files = [os.path.join(p.package, name) for name in ('datasets.py', 'main.py')]
  dirty = _git(top, 'status', '--porcelain', '--', *files).stdout.splitlines()
  if dirty:
    first = dirty[0][3:]
    raise Refused(f'{first} has uncommitted changes: commit or stash them, '
                  'then run again; nothing written')
  if _git(top, 'var', 'GIT_COMMITTER_IDENT', check=False).returncode:
    raise Refused(f'git in {top} has no user name/e-mail: git config '
                  'user.name "..." and user.email "...", then run again')
  if _git(top, 'rev-parse', '--verify', 'HEAD', check=False).returncode:
    raise Refused(f'{top} has no commit yet: commit the checkout first')
  made = []
  for _, step, before, after in p.pending:
    paths = [os.path.join(p.package, name) for name in after]
    for name, text in after.items():
      _write(os.path.join(p.package, name), text)
    message = f'{step.subject}\n\n{step.body}\n'
    result = subprocess.run(['git', 'commit', '-q', '-F', '-', '--'] + paths,
                            cwd=top, input=message, capture_output=True,
                            text=True, check=False)
    if result.returncode:
      for name, text in before.items():  # Leave the files as committed.
        _write(os.path.join(p.package, name), text)
      done = f'; {len(made)} earlier step(s) committed' if made else ''
      raise Refused(f'git commit of "{step.subject}" failed '
                    f'({result.stderr.strip()[:200]}){done}')
    made.append(_git(top, 'rev-parse', '--short', 'HEAD').stdout.strip() +
                 ' ' + step.subject)
  return made


def write_patch_files(p: Plan) -> List[str]:
  folder = os.path.join(p.root, PATCH_FOLDER)
  names = [os.path.join(folder, f'{number:04d}-{step.slug}.patch')
           for number, step, _, _ in p.pending]
  for name in names:
    if os.path.exists(name):
      raise Refused(f'{name} exists from an earlier run: move it away, then '
                    'run again; nothing written')
  os.makedirs(folder, exist_ok=True)
  for name, (_, step, before, after) in zip(names, p.pending):
    _write(name, f'{step.subject}\n\n{step.body}\n\n' +
           _unified(p.root, p.package, before, after))
  for _, _, _, after in p.pending:
    for file, text in after.items():
      _write(os.path.join(p.package, file), text)
  return names


def apply(path: str, out=sys.stdout) -> int:
  p = plan(path)
  if not p.pending:
    print(f'already applied: all {len(p.already)} steps are in {p.package}; '
          'nothing written', file=out)
    return 0
  top = git_toplevel(p.package)
  if top:
    head = _git(top, 'rev-parse', 'HEAD', check=False).stdout.strip()
    made = write_commits(p, top)
    stat = _git(top, 'diff', '--stat', head, 'HEAD', '--', p.package).stdout
    print(stat.rstrip(), file=out)
    print(f'wrote {len(made)} commits in {top} '
          f'({_git(top, "rev-parse", "--abbrev-ref", "HEAD").stdout.strip()}):',
          file=out)
    for line in made:
      print(f'  {line}', file=out)
  else:
    written = write_patch_files(p)
    for name in written:
      stat = subprocess.run(['git', 'apply', '--stat', name], cwd=p.root,
                            capture_output=True, text=True, check=False)
      print(f'{os.path.basename(name)}: {stat.stdout.strip()}', file=out)
    print(f'{p.package} is not in a git repository: edited its files in place '
          f'and wrote {len(written)} patch files to '
          f'{os.path.join(p.root, PATCH_FOLDER)} (undo with patch -R -p1)',
          file=out)
  if p.already:
    print(f'{len(p.already)} steps were already there', file=out)
  return 0


def main(argv: Sequence[str] = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('path')
  args = parser.parse_args(argv)
  return run(args.path)


def run(path: str) -> int:
  try:
    return apply(path)
  except Refused as e:
    print(f'refused: {e}', file=sys.stderr)
    return 1


if __name__ == '__main__':
  sys.exit(main())
