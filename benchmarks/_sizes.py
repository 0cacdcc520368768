"""The problem sizes of `launch.benchmark` (`--size`), shared by its hot paths
(`hot_paths`) and the PyTorch peer (`side_by_side.peer_size`)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Size:
  """Problem sizes of one benchmark setting.

  Scoring, superpixel-mean and partial-label inputs are `height` x `width`;
  MC scoring runs DRN-D-22 at `model_width` on `batch` images with `passes`
  dropout passes in chunks of `mc_chunk` (None: all at once); pools hold `pool`
  images; the train step uses `train_crop`, `train_batch` and the two widths
  `train_widths` ('reduced', 'full'); `repeats` timed runs follow a warm-up;
  the selection step ranks `selection_units` superpixels and picks
  `selection_picks` of them.
  """
  height: int
  width: int
  model_width: float
  batch: int
  passes: int
  mc_chunk: int | None
  pool: int
  watershed_size: tuple[int, int]
  watershed_images: int
  memory_passes: tuple[int, ...]
  train_crop: tuple[int, int]
  train_batch: int
  train_widths: tuple[float, float]
  repeats: int
  selection_units: int = 100_000
  selection_picks: int = 1000


SIZES: dict[str, Size] = {
    # Seconds on a laptop CPU, for tests: every entry, nothing meaningful.
    'tiny': Size(32, 64, 0.0625, 2, 4, None, 3, (32, 64), 3, (1, 10, 30),
                 (32, 64), 1, (0.25, 1.0), 1, selection_units=2000, selection_picks=50),
    # CPU-sized: the synthetic_city resolution and the CPU network width.
    'small': Size(128, 256, 0.25, 4, 10, None, 16, (256, 512), 12, (1, 10, 30),
                  (128, 256), 2, (0.25, 1.0), 5),
    # Cityscapes resolution and the published network (for a GPU).
    'cityscapes': Size(1024, 2048, 1.0, 1, 10, 5, 16, (1024, 2048), 32,
                       (1, 10, 30), (896, 896), 8, (0.25, 1.0), 5,
                       selection_units=1_000_000),
}
