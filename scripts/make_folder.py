"""Makes an image folder to try the product on, and plays its annotators.

  python scripts/make_folder.py marks             # ./marks: 96x160 images, 11 kinds of thin mark
  python scripts/make_folder.py blobs             # ./blobs: 192x256 images, 4 kinds of large blob
  python scripts/make_folder.py marks --labeled=all --out=marks_full   # every image labeled
  python scripts/make_folder.py marks --answer=work/marks/mc_variance/seed_0/requests/cycle_01

A folder is what `--dataset=image_folder:PATH` reads: classes.json, images/train
and images/val, labels/val for every validation image and labels/train for the
first --labeled training images. Every training label is also kept in
answers/train (the annotators' answers, which the product never reads);
`--answer=REQUEST` copies the answers a request asks for into labels/, as
people who label in a tool and save PNGs would. The same kind and --seed give
the same folder, byte for byte.

marks: 0-6 thin strokes a picture (16-40 px long, 2-4 px wide, in 11 classes
told apart by colour and width) on a textured ground; most pixels are ground.
blobs: 1-4 ellipses a picture (40-110 px across, 4 classes told apart by colour
and texture) on a textured ground.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
from PIL import Image
from PIL import ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from segal_jax.data import _scenes_draw  # pylint: disable=wrong-import-position

GROUND = ('ground', (96, 96, 88))
MARK_CLASSES = (('scratch', (200, 40, 40)), ('crack', (40, 40, 40)), ('hair', (230, 200, 150)),
                ('thread', (40, 160, 40)), ('wire', (40, 80, 200)), ('vein', (150, 30, 150)),
                ('streak', (230, 230, 40)), ('seam', (40, 200, 200)), ('rust', (180, 90, 20)),
                ('stain', (250, 250, 250)), ('mould', (100, 160, 90)))
BLOB_CLASSES = (('leaf', (60, 150, 50)), ('stone', (140, 140, 150)), ('fruit', (210, 60, 40)),
                ('flower', (220, 200, 60)))
KINDS = {
    # kind: (classes, height, width, train images, val images)
    'marks': (MARK_CLASSES, 96, 160, 300, 100),
    'blobs': (BLOB_CLASSES, 192, 256, 200, 60),
}


def _ground(rng, height, width):
  """[H, W, 3] float: a dim textured surface whose tone changes from picture to picture."""
  tone = np.asarray(GROUND[1]) + rng.normal(0, 20, 3)
  texture = _scenes_draw.smooth_noise(rng, height, width, 12.0)[..., None] * 18
  grain = rng.normal(0, 6, (height, width, 3))
  return tone + texture + grain


def _draw(rng, kind, height, width):
  """(image [H, W, 3] uint8, label [H, W] uint8 of class values, 0 the ground)."""
  classes = KINDS[kind][0]
  image = Image.fromarray(np.clip(_ground(rng, height, width), 0, 255).astype(np.uint8))
  label = Image.new('L', (width, height), 0)
  pen, ink = ImageDraw.Draw(image), ImageDraw.Draw(label)
  if kind == 'marks':
    for _ in range(rng.integers(0, 7)):
      c = int(rng.integers(len(classes)))
      length, angle = rng.uniform(16, 40), rng.uniform(0, np.pi)
      x, y = rng.uniform(8, width - 8), rng.uniform(8, height - 8)
      dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
      line = [(x - dx, y - dy), (x + dx, y + dy)]
      wide = 2 + c % 3  # classes of like colour differ in width
      color = tuple(int(v) for v in np.clip(np.asarray(classes[c][1]) + rng.normal(0, 15, 3),
                                             0, 255))
      pen.line(line, fill=color, width=wide)
      ink.line(line, fill=c + 1, width=wide)
  else:
    for _ in range(rng.integers(1, 5)):
      c = int(rng.integers(len(classes)))
      rx, ry = rng.uniform(20, 55, 2)
      x, y = rng.uniform(0, width), rng.uniform(0, height)
      box = [x - rx, y - ry, x + rx, y + ry]
      color = tuple(int(v) for v in np.clip(np.asarray(classes[c][1]) + rng.normal(0, 20, 3),
                                             0, 255))
      pen.ellipse(box, fill=color)
      ink.ellipse(box, fill=c + 1)
    pixels = np.asarray(image, np.float32)  # texture over everything: colour alone is not enough
    pixels += rng.normal(0, 12, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  return np.asarray(image), np.asarray(label)


def make(out, kind, *, labeled, seed=0):
  """Writes the folder `out` of `kind`; `labeled`: training images with labels (None: all)."""
  classes, height, width, n_train, n_val = KINDS[kind]
  if os.path.exists(out):
    sys.exit(f'error: {out} already exists; remove it or pass another --out.')
  table = {'ignore': 255, 'classes': [
      {'name': name, 'color': list(color), 'thing': k > 0, 'value': k}
      for k, (name, color) in enumerate((GROUND,) + classes)]}
  for sub in ('images/train', 'images/val', 'labels/train', 'labels/val', 'answers/train'):
    os.makedirs(os.path.join(out, sub))
  with open(os.path.join(out, 'classes.json'), 'w') as f:
    json.dump(table, f, indent=1)
  rng = np.random.default_rng([seed, list(KINDS).index(kind)])
  for split, n in (('train', n_train), ('val', n_val)):
    for k in range(n):
      image, label = _draw(rng, kind, height, width)
      name = f'{split}/{kind}_{k:03d}.png'
      Image.fromarray(image).save(os.path.join(out, 'images', name))
      if split == 'val' or labeled is None or k < labeled:
        Image.fromarray(label).save(os.path.join(out, 'labels', name))
      if split == 'train':
        Image.fromarray(label).save(os.path.join(out, 'answers', name))
  told = n_train if labeled is None else min(labeled, n_train)
  print(f'wrote {out}: {n_train} training images of {height}x{width} ({told} labeled), '
        f'{n_val} labeled validation images, {len(classes)} classes and the ground')


def answer(request):
  """Copies the answers to a request (its request.json) into the folder's labels/."""
  path = os.path.join(request, 'request.json')
  if not os.path.exists(path):
    sys.exit(f'error: {request} has no request.json; pass a request folder the run wrote '
             '(<workdir>/<strategy>/seed_<s>/requests/cycle_NN).')
  with open(path) as f:
    record = json.load(f)
  for item in record['items']:
    shutil.copy(os.path.join(record['folder'], 'answers', item['name'] + '.png'), item['label'])
  print(f'labelled {len(record["items"])} image(s): answers copied into '
        f'{os.path.join(record["folder"], "labels")}/')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('kind', nargs='?', choices=sorted(KINDS), help='what the pictures show')
  parser.add_argument('--out', help='the folder to write (default: ./KIND)')
  parser.add_argument('--labeled', default='20',
                      help="training images labeled from the start, or 'all' (default 20)")
  parser.add_argument('--seed', type=int, default=0, help='another seed draws another folder')
  parser.add_argument('--answer', metavar='REQUEST',
                      help="a run's request folder: copy its answers into labels/")
  args = parser.parse_args()
  if args.answer:
    answer(args.answer)
  elif args.kind:
    labeled = None if args.labeled == 'all' else int(args.labeled)
    make(args.out or args.kind, args.kind, labeled=labeled, seed=args.seed)
  else:
    parser.error('name a kind (marks or blobs) or pass --answer=REQUEST')


if __name__ == '__main__':
  main()
