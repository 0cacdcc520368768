"""Records on disk: JSON, JSON lines and the selection CSV, written atomically.

Every file is written to a temporary name in the same directory, then
`os.replace`d (`files.atomic_open`), so an interrupted run never leaves a
half-written result.
"""

from __future__ import annotations

import csv
import json
import math
from typing import Any, Iterable, Sequence

from segal_jax.errors import UserError
from segal_jax.formats.files import atomic_open  # public here too: records.atomic_open


def write_json(path: str, obj: Any) -> None:
  with atomic_open(path) as f:
    json.dump(obj, f, indent=1)


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> None:
  with atomic_open(path) as f:
    for r in records:
      f.write(json.dumps(r) + '\n')


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a JSON-lines file; a damaged line is a UserError naming it."""
  records = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except ValueError as e:
        raise UserError(f'{path} line {n} is not valid JSON ({getattr(e, "msg", e)})',
                        'restore the file, or delete that run directory and rerun '
                        'launch.run to recompute it') from e
  return records


def write_selection_csv(path: str, names: Sequence[str], scores: Sequence[float]) -> None:
  """The SuperAnnotate upload format: `name,entropy_value`, highest first."""
  with atomic_open(path) as f:
    w = csv.writer(f)
    w.writerow(['name', 'entropy_value'])
    for n, s in zip(names, scores):
      w.writerow([n, f'{float(s):.6g}'])


def nan_to_none(values: Iterable[float]) -> list[float | None]:
  return [None if (v is None or math.isnan(v)) else float(v) for v in values]
