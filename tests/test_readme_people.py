"""The README's people-in-the-loop round, command by command, as a newcomer types it.

The commands are read from the fenced block of "Active learning with your
annotators", so the test fails when the README drifts from what runs. Each
launch.run is shortened by flags put after the README's own (2 steps, 2 MC
passes); everything else is the README's command.
"""

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = '## Active learning with your annotators'
SHORTER = ['--train_min_steps=2', '--train_epochs=1', '--mc_passes=2', '--progress=false']


def readme_commands():
  """The shell commands of the section's first fenced block, continuations joined."""
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  section = text[text.index(SECTION):]
  block = re.search(r'```sh\n(.*?)```', section, re.S).group(1)
  joined = block.replace('\\\n', ' ')
  return [shlex.split(line) for line in joined.splitlines()
          if line.strip() and not line.lstrip().startswith('#')]


def test_the_block_is_make_run_answer_run():
  commands = readme_commands()
  assert [c[:3] for c in commands] == [
      ['python', 'scripts/make_folder.py', 'blobs'], ['python', '-m', 'launch.run'],
      ['python', 'scripts/make_folder.py', commands[2][2]], ['python', '-m', 'launch.run']]
  assert commands[1] == commands[3]  # "rerun the same command"
  assert commands[1][3] == '--flagfile=configs/folder_cpu.flags'


def _run(tmp_path, argv):
  env = dict(os.environ, PYTHONPATH=ROOT, TFDS_DATA_DIR=str(tmp_path / 'tfds'))
  done = subprocess.run([sys.executable] + argv[1:], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return done.stdout


@pytest.mark.slow
def test_the_readme_round_runs_as_written(tmp_path):
  # About 3-4 min on 2 CPU cores (compiling and the data build dominate).
  for name in ('configs', 'scripts'):
    os.symlink(os.path.join(ROOT, name), tmp_path / name)
  make, run, answer, rerun = readme_commands()
  _run(tmp_path, make)
  plan = _run(tmp_path, run + ['--dry_run'])
  steps = re.search(r'cycle 0: train on \d+ images, \d+ epochs, (\d+) steps \(about', plan)
  assert 500 <= int(steps.group(1)) < 520, plan  # the recipe's minimum, in whole epochs
  out = _run(tmp_path, run + SHORTER)
  assert re.search(r'mc_variance cycle 0: \d+ training steps, about .* on this machine', out)
  assert 'cycle 1 asks for 20 image(s) to be labeled' in out
  labels = tmp_path / 'blobs' / 'labels' / 'train'
  assert len(os.listdir(labels)) == 20
  _run(tmp_path, answer)
  assert len(os.listdir(labels)) == 40
  out = _run(tmp_path, rerun + SHORTER)
  assert 'cycle 2 asks for 20 image(s) to be labeled' in out
