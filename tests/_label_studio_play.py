"""Annotators played through a real Label Studio server's API, for the tests
marked `label_studio`: brush masks encoded by Label Studio's own SDK (in its
virtual environment, LS_VENV, default .ls-venv: an implementation of the
format independent of `brush_rle`), polygon regions of rectangles, users and
annotations."""

import json
import os
import subprocess
import uuid

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SDK = """
import json, sys
import numpy as np
from label_studio_sdk.converter import brush
job = json.load(sys.stdin)
out = {'encoded': [[int(b) for b in brush.mask2rle(np.array(m, np.uint8) * 255)]
                   for m in job['encode']],
       'decoded': [(brush.decode_rle(r).reshape(job['h'], job['w'], 4)[..., 3] > 127).tolist()
                   for r in job['decode']]}
json.dump(out, sys.stdout)
"""


def sdk(h, w, encode=(), decode=()):
  """Masks -> RLEs and RLEs -> masks by Label Studio's own SDK, in its venv."""
  python = os.path.join(REPO, os.environ.get('LS_VENV', '.ls-venv'), 'bin', 'python')
  job = {'encode': [np.asarray(m).tolist() for m in encode], 'decode': list(decode),
         'h': h, 'w': w}
  out = subprocess.run([python, '-c', _SDK], input=json.dumps(job), capture_output=True,
                       text=True, check=True, timeout=120)
  return json.loads(out.stdout)


def rects(rectangles, h, w, value):
  """[(class, x0, y0, x1, y1)] painted in order -> (label in PNG values `value`,
  polygon regions: the rectangles' corners in percent)."""
  out = np.full((h, w), 255, np.uint8)
  regions = []
  for name, x0, y0, x1, y1 in rectangles:
    out[y0:y1, x0:x1] = value[name]
    pts = [[100 * x / w, 100 * y / h] for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    regions.append({'type': 'polygonlabels', 'from_name': 'label', 'to_name': 'image',
                    'original_width': w, 'original_height': h,
                    'value': {'points': pts, 'polygonlabels': [name]}})
  return out, regions


def brush_regions(label, table, names=None):
  """One brush region per class of `label` (PNG values), encoded by the SDK;
  `names` renames classes (a wrong class name)."""
  h, w = label.shape
  present = [c for c in table.classes if (label == c.value).any()]
  rles = sdk(h, w, encode=[label == c.value for c in present])['encoded']
  return [{'type': 'brushlabels', 'from_name': 'brush', 'to_name': 'image',
           'original_width': w, 'original_height': h,
           'value': {'format': 'rle', 'rle': rle,
                     'brushlabels': [(names or {}).get(c.name, c.name)]}}
          for c, rle in zip(present, rles)]


def users(client, *names):
  """New users of the server, one per name (unique e-mails)."""
  return [client.request('POST', '/api/users/', {
      'email': f'{who}-{uuid.uuid4().hex[:6]}@example.com', 'username': who}) for who in names]


def annotate(client, task, annotator, result, seconds, cancelled=False):
  return client.request('POST', f'/api/tasks/{task["id"]}/annotations/', {
      'result': result, 'was_cancelled': cancelled, 'lead_time': seconds,
      'completed_by': annotator['id']})
