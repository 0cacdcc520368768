"""The run state: what a run has done so far, saved where it resumes from.

`RunState` is the active-learning state of one run (what is labeled, the
records of finished cycles, a pending labelling request, who labeled what). It
is saved at the start of each cycle as one step of the run's Orbax checkpoints
(`checkpoint.RunCheckpointer` in `<run_dir>/checkpoints`), the step that ends a
cycle holding the run state only; mid-cycle steps add the training state
beside it (`loop`), numbered `cycle * STEPS_PER_CYCLE + epoch`. Nothing else
holds the run state (`metrics.jsonl` beside it is the user-facing copy of the
records). Runs written before this layout kept the run state in
`al_state.json`; they resume from it, and the file goes once a step of the new
layout is saved.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax

from segal_jax.errors import UserError
from segal_jax.state import checkpoint

RUN_CHECKPOINTS = 'checkpoints'  # under a run directory
LEGACY_STATE_FILE = 'al_state.json'  # the run state of runs written before
# Checkpoint step of (cycle, epoch): cycle * this + epoch, increasing within a
# run; the step that ends cycle c is (c + 1) * this - 1.
STEPS_PER_CYCLE = 1_000_000


@dataclasses.dataclass
class RunState:
  """What a run has done so far; enough to resume after any finished cycle.

  fingerprint: `ExperimentConfig.fingerprint()` of the run.
  pool: `pool.PoolLabels.to_json()`, what the annotator has labeled.
  records: one dict per finished cycle.
  pending: the labelling request people are working on (`label_requests`), or None.
  labelling: one dict per request that came back: who labeled what, from which
    file, when (`human`).
  images: the names of the pool's images when the state was saved (people's
    runs: the folder may grow or shrink before the next run).
  label_digests: image name -> the label file as taken in (`human`), to find
    labels edited after intake.
  corrections: one dict per label edited after intake: who, when, which file.
  """
  fingerprint: str
  pool: dict[str, Any]
  records: list[dict[str, Any]]
  pending: dict[str, Any] | None = None
  labelling: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  images: list[str] | None = None
  label_digests: dict[str, Any] = dataclasses.field(default_factory=dict)
  corrections: list[dict[str, Any]] = dataclasses.field(default_factory=list)

  @property
  def next_cycle(self) -> int:
    return len(self.records)

  def to_json(self) -> dict[str, Any]:
    """The al_state item: the run state and the cycle it is at."""
    return {'fingerprint': self.fingerprint, 'cycle': self.next_cycle, 'pool': self.pool,
            'records': self.records, 'pending': self.pending, 'labelling': self.labelling,
            'images': self.images, 'label_digests': self.label_digests,
            'corrections': self.corrections}


def load_run_state(run_dir: str, fingerprint: str) -> RunState | None:
  """The newest saved state of the run in `run_dir`; None if it has not started.

  Reads the newest readable checkpoint step, or a run written before this
  layout (`al_state.json`).

  Raises:
    UserError: unreadable, or made with another configuration (`fingerprint`).
  """
  state = None
  if os.path.isdir(os.path.join(run_dir, RUN_CHECKPOINTS)):
    latest = checkpoint.RunCheckpointer(os.path.join(run_dir, RUN_CHECKPOINTS)).latest_al_state()
    if latest is not None and 'records' in latest[1]:
      al = latest[1]
      state = RunState(al['fingerprint'], dict(al['pool']), list(al['records']),
                       al.get('pending'), list(al.get('labelling') or []), al.get('images'),
                       dict(al.get('label_digests') or {}), list(al.get('corrections') or []))
  legacy = os.path.join(run_dir, LEGACY_STATE_FILE)
  if state is None and os.path.exists(legacy):
    try:
      with open(legacy) as f:
        raw = json.load(f)
      state = RunState(raw['fingerprint'], dict(raw['pool']), list(raw['records']))
    except (OSError, ValueError, KeyError) as e:
      raise UserError(f'the run state {legacy} is unreadable ({e})',
                      'delete that run directory to start it again') from e
  if state is not None and state.fingerprint != fingerprint:
    raise UserError(f'{run_dir} holds a run with a different configuration',
                    'use a new --workdir, or the flags that run was started with')
  return state


def save_run_state(run_dir: str, state: RunState) -> None:
  """Saves the state of a run at the start of cycle `state.next_cycle` (every
  process takes part), and removes a `al_state.json` of the earlier layout.

  A state waiting for labels (`pending`) is saved one step before the state
  that took them in, so taking them in never deletes the step it came from.
  """
  with checkpoint.RunCheckpointer(os.path.join(run_dir, RUN_CHECKPOINTS)) as ckpt:
    ckpt.save(state.next_cycle * STEPS_PER_CYCLE - (2 if state.pending else 1), None,
              state.to_json())
  legacy = os.path.join(run_dir, LEGACY_STATE_FILE)
  if jax.process_index() == 0 and os.path.exists(legacy):
    os.remove(legacy)
