"""`patchset.py upstream`: the study's change written into an upstream checkout.

Most tests run the tool on a small synthetic tree built here: the three files
it reads hold the anchor lines it looks for, between filler lines of our own.
`test_real_checkout` runs it on a copy of a real google/automl checkout at
commit a6bb1ff when AUTOML_DIR names one (its root or efficientnetv2/).
"""
import ast
import os
import py_compile
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, 'patches'))
import upstream_edits  # noqa: E402  pylint: disable=g-import-not-at-top

PATCHSET = os.path.join(REPO, 'patches', 'patchset.py')
GIT_ENV = dict(os.environ, GIT_AUTHOR_NAME='t', GIT_AUTHOR_EMAIL='t@example.com',
               GIT_COMMITTER_NAME='t', GIT_COMMITTER_EMAIL='t@example.com')
FILES = ('datasets.py', 'main.py')
# base_config's keys in the synthetic hparams.py: some of the recipe's keys
# and some it does not use; the recipe's other keys must be left out.
SYNTHETIC_KEYS = {
    'model': ['model_name', 'dropout_rate', 'survival_prob'],
    'train': ['epochs', 'batch_size', 'lr_base', 'stages', 'isize'],
    'eval': ['isize', 'batch_size'],
    'data': ['ds_name', 'ram', 'ibase'],
}


def _steps():
  return upstream_edits._steps('')  # pylint: disable=protected-access


def _synthetic_tree(root):
  """root/efficientnetv2/ with every anchor once, between filler lines."""
  package = os.path.join(root, 'efficientnetv2')
  os.makedirs(package)
  anchors = {name: [] for name in FILES}
  for step in _steps():
    for edit in step.edits:
      anchors[edit.path].append(edit.anchor)
  for name, lines in anchors.items():
    body = [f'# synthetic {name}: filler only']
    for k, anchor in enumerate(lines):
      body += [anchor, f'filler_{k} = {k}', '']
    with open(os.path.join(package, name), 'w', encoding='utf-8') as f:
      f.write('\n'.join(body) + '\n')
  sections = ''.join(
      f'    {section}=dict({", ".join(k + "=None" for k in keys)}),\n'
      for section, keys in SYNTHETIC_KEYS.items())
  with open(os.path.join(package, 'hparams.py'), 'w', encoding='utf-8') as f:
    f.write(f'x = 1\nbase_config = Config(\n{sections})\n')
  with open(os.path.join(package, 'utils.py'), 'w', encoding='utf-8') as f:
    f.write('# an unrelated file\n')
  with open(os.path.join(root, 'README.md'), 'w', encoding='utf-8') as f:
    f.write('unrelated\n')
  return package


def _git(root, *args):
  return subprocess.run(('git',) + args, cwd=root, env=GIT_ENV, check=True,
                        capture_output=True, text=True).stdout


def _git_repo(root):
  _git(root, 'init', '-q')
  _git(root, 'add', '.')
  _git(root, 'commit', '-q', '-m', 'synthetic upstream')


def _run(path):
  return subprocess.run([sys.executable, PATCHSET, 'upstream', path],
                        env=GIT_ENV, capture_output=True, text=True,
                        check=False)


def _snapshot(root):
  out = {}
  for folder, _, names in os.walk(root):
    if '.git' in folder.split(os.sep):
      continue
    for name in names:
      with open(os.path.join(folder, name), 'rb') as f:
        out[os.path.relpath(os.path.join(folder, name), root)] = f.read()
  return out


def _read(package, name):
  with open(os.path.join(package, name), encoding='utf-8') as f:
    return f.read()


def _check_each_block_once(package):
  for step in _steps():
    for edit in step.edits:
      text = _read(package, edit.path)
      block = upstream_edits._block(edit.text)  # pylint: disable=protected-access
      assert text.count(block) == 1, (edit.path, edit.signature)
      anchor_left = text.count(edit.anchor + '\n')
      assert anchor_left == (0 if edit.where == 'replace' else 1), edit.anchor


@pytest.fixture
def repo(tmp_path):
  root = str(tmp_path / 'automl')
  package = _synthetic_tree(root)
  _git_repo(root)
  return root, package


@pytest.mark.parametrize('inside', [False, True])
def test_writes_each_change_once_as_commits(repo, inside):
  root, package = repo
  result = _run(package if inside else root)
  assert result.returncode == 0, result.stderr
  subjects = _git(root, 'log', '--format=%s').splitlines()
  assert subjects[:-1] == [s.subject for s in reversed(_steps())]
  assert subjects[-1] == 'synthetic upstream'
  _check_each_block_once(package)
  # Only datasets.py and main.py changed, all of it committed.
  assert _git(root, 'status', '--porcelain') == ''
  changed = _git(root, 'diff', '--name-only', 'HEAD~7', 'HEAD').split()
  assert changed == ['efficientnetv2/datasets.py', 'efficientnetv2/main.py']
  # The report: git diff --stat and where it wrote.
  assert '2 files changed' in result.stdout
  assert root in result.stdout


def test_each_commit_is_one_step(repo):
  root, _ = repo
  assert _run(root).returncode == 0
  for k, step in enumerate(_steps()):
    rev = f'HEAD~{len(_steps()) - 1 - k}'
    diff = _git(root, 'show', '--format=', rev)
    for edit in step.edits:
      assert edit.signature in diff, step.subject
    for other in _steps():
      if other.subject != step.subject:
        for edit in other.edits:
          assert ('+' + edit.signature) not in diff, (step.subject, edit)


def test_fashion_mnist_config_holds_the_recipe_values(repo):
  root, package = repo
  assert _run(root).returncode == 0
  text = _read(package, 'datasets.py')
  start = text.index('class FashionMNIST():')
  end = text.index("hparams.registry_map['ds:fashion_mnist']")
  namespace = {'hparams': type('H', (), {'Config': dict})}
  exec(text[start:end], namespace)  # pylint: disable=exec-used
  cfg = namespace['FashionMNIST'].cfg
  with open(upstream_edits.RECIPE, encoding='utf-8') as f:
    recipe = yaml.safe_load(f)
  expected = {
      section: {k: v for k, v in values.items()
                if k in SYNTHETIC_KEYS.get(section, [])}
      for section, values in recipe.items()}
  assert cfg == {s: v for s, v in expected.items() if v}
  assert cfg['train']['stages'] == recipe['train']['stages']
  # Keys upstream lacks are named, not written.
  docstring = namespace['FashionMNIST'].__doc__.replace('\n  ', ' ')
  assert 'data.ra_ops' in docstring and 'train.optimizer' in docstring
  assert 'ra_ops=' not in text


def test_second_application_is_a_no_op(repo):
  root, _ = repo
  assert _run(root).returncode == 0
  before, head = _snapshot(root), _git(root, 'rev-parse', 'HEAD')
  again = _run(root)
  assert again.returncode == 0, again.stderr
  assert 'already applied' in again.stdout
  assert _snapshot(root) == before
  assert _git(root, 'rev-parse', 'HEAD') == head


@pytest.mark.parametrize('name,anchor', [
    ('main.py', "flags.DEFINE_bool('export_to_tpu', False, 'Export metagraph.')"),
    ('datasets.py', 'def get_dataset_class(ds_name):'),
])
def test_missing_anchor_is_refused_and_nothing_written(repo, name, anchor):
  root, package = repo
  path = os.path.join(package, name)
  text = _read(package, name)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text.replace(anchor + '\n', 'something else\n'))
  _git(root, 'commit', '-qam', 'drift')
  before, head = _snapshot(root), _git(root, 'rev-parse', 'HEAD')
  result = _run(root)
  assert result.returncode != 0
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1
  assert f'efficientnetv2/{name}' in lines[0] and anchor in lines[0]
  assert _snapshot(root) == before
  assert _git(root, 'rev-parse', 'HEAD') == head


def test_repeated_anchor_is_refused(repo):
  root, package = repo
  anchor = "      'cars': CarsInput,"
  with open(os.path.join(package, 'datasets.py'), 'a', encoding='utf-8') as f:
    f.write(anchor + '\n')
  _git(root, 'commit', '-qam', 'twice')
  before = _snapshot(root)
  result = _run(root)
  assert result.returncode != 0
  assert '2 copies' in result.stderr and anchor.strip() in result.stderr
  assert _snapshot(root) == before


def test_edited_block_is_refused_not_inserted_again(repo):
  root, package = repo
  assert _run(root).returncode == 0
  path = os.path.join(package, 'main.py')
  text = _read(package, 'main.py')
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text.replace('image_size = input_image_size',
                         'image_size = 2 * input_image_size'))
  _git(root, 'commit', '-qam', 'user edit')
  before = _snapshot(root)
  result = _run(root)
  assert result.returncode != 0
  assert 'efficientnetv2/main.py' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1
  assert _snapshot(root) == before


def test_uncommitted_changes_are_refused_and_kept(repo):
  root, package = repo
  path = os.path.join(package, 'main.py')
  with open(path, 'a', encoding='utf-8') as f:
    f.write('# my work in progress\n')
  before = _snapshot(root)
  result = _run(root)
  assert result.returncode != 0
  assert 'efficientnetv2/main.py' in result.stderr
  assert 'uncommitted' in result.stderr
  assert _snapshot(root) == before
  assert _git(root, 'log', '--format=%s') == 'synthetic upstream\n'


def test_not_a_checkout_is_refused(tmp_path):
  result = _run(str(tmp_path))
  assert result.returncode != 0
  assert str(tmp_path) in result.stderr and 'efficientnetv2' in result.stderr
  assert os.listdir(tmp_path) == []


def test_outside_git_writes_patch_files_that_undo(tmp_path):
  root = str(tmp_path / 'automl')
  package = _synthetic_tree(root)
  original = _snapshot(root)
  result = _run(root)
  assert result.returncode == 0, result.stderr
  _check_each_block_once(package)
  folder = os.path.join(root, upstream_edits.PATCH_FOLDER)
  patches = sorted(os.listdir(folder))
  assert len(patches) == len(_steps())
  assert patches[0].startswith('0001-') and patches[-1].startswith('0007-')
  # Untouched: every file but the two edited ones.
  after = _snapshot(root)
  for path, data in original.items():
    if os.path.basename(path) not in FILES:
      assert after[path] == data
  # A second run writes nothing; reversing the patches restores the files.
  assert 'already applied' in _run(root).stdout
  assert _snapshot(root) == after
  for name in reversed(patches):
    subprocess.run(['git', 'apply', '-R', os.path.join(folder, name)],
                   cwd=root, check=True)
  shutil.rmtree(folder)
  assert _snapshot(root) == original


def _automl_package():
  path = os.environ.get('AUTOML_DIR')
  if not path:
    return None
  return upstream_edits.find_package(path)


@pytest.mark.skipif(
    not os.environ.get('AUTOML_DIR'),
    reason='set AUTOML_DIR to a google/automl checkout at a6bb1ff (its root '
    'or efficientnetv2/) to run the tool on a copy of it')
def test_real_checkout(tmp_path):
  source = _automl_package()
  root = str(tmp_path / 'automl')
  package = os.path.join(root, 'efficientnetv2')
  shutil.copytree(source, package,
                  ignore=shutil.ignore_patterns('__pycache__', '.git'))
  _git_repo(root)
  result = _run(root)
  assert result.returncode == 0, result.stderr
  assert len(_git(root, 'log', '--format=%s').splitlines()) == 8
  _check_each_block_once(package)
  for name in FILES:
    py_compile.compile(os.path.join(package, name), doraise=True)
  datasets_tree = ast.parse(_read(package, 'datasets.py'))
  classes = {n.name for n in datasets_tree.body if isinstance(n, ast.ClassDef)}
  assert {'FashionMNISTInput', 'FashionMNISTFt', 'FashionMNIST'} <= classes
  # Every recipe key upstream's base_config has is written.
  keys = upstream_edits.upstream_config_keys(_read(package, 'hparams.py'))
  recipe = upstream_edits.load_recipe()
  text = _read(package, 'datasets.py')
  for section, values in recipe.items():
    for key, value in values.items():
      if key in keys.get(section, ()):
        assert f'          {key}={value!r},\n' in text, (section, key)
  assert "'ablation', 'none', ABLATIONS" in _read(package, 'main.py')
  again = _run(package)
  assert again.returncode == 0 and 'already applied' in again.stdout


def test_data_command_refuses_a_folder_without_the_files(tmp_path):
  source, tfds_dir = tmp_path / 'idx', tmp_path / 'tfds'
  source.mkdir()
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'patches', 'upstream_data.py'),
       f'--source={source}', f'--tfds_data_dir={tfds_dir}'],
      capture_output=True, text=True, check=False)
  assert result.returncode == 1
  errors = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1
  assert str(source) in errors[0] and '--source=' in errors[0]
  assert not tfds_dir.exists()
