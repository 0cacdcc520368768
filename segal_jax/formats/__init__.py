"""Files on disk: atomic writes, JSON/JSONL/CSV records, and what annotators load.

Every file outside Orbax is written atomically (`files.atomic_open`).

`annotation_files` (COCO polygons, superpixel id masks, heat maps) reads class
tables and is imported on its own: `from segal_jax.formats import annotation_files`.
"""

from segal_jax.formats import files
from segal_jax.formats.files import atomic_open
from segal_jax.formats.files import remove_stale_parts
from segal_jax.formats import records
from segal_jax.formats.records import nan_to_none
from segal_jax.formats.records import read_jsonl
from segal_jax.formats.records import write_json
from segal_jax.formats.records import write_jsonl
from segal_jax.formats.records import write_selection_csv

__all__ = ['atomic_open', 'files', 'nan_to_none', 'read_jsonl', 'records',
           'remove_stale_parts', 'write_json', 'write_jsonl', 'write_selection_csv']
