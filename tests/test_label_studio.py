"""The Label Studio connector's failures, against a tiny server in this process:
a server that is down, a refused token, a refusal with Label Studio's reason,
and a missing token. The round trip itself runs against a real server in
test_label_studio_server.py."""

import http.server
import json
import socket
import threading

import numpy as np
import pytest

from segal_jax import errors
from segal_jax.labelling import label_studio

TOKEN = 'secret-token-123'


class _Handler(http.server.BaseHTTPRequestHandler):

  def _answer(self):
    if self.headers.get('Authorization') != f'Token {TOKEN}':
      code, body = 401, {'detail': 'Invalid token.'}
    elif self.path.startswith('/api/projects'):
      code, body = 400, {'detail': 'Validation error', 'validation_errors': {
          'label_config': ['bad\nconfig']}}
    else:
      code, body = 200, {'ok': True}
    data = json.dumps(body).encode()
    self.send_response(code)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  do_GET = do_POST = do_PATCH = _answer

  def log_message(self, *args):
    pass


@pytest.fixture(scope='module')
def server():
  httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{httpd.server_address[1]}'
  httpd.shutdown()


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_server_down_is_one_line_with_the_fix():
  url = f'http://127.0.0.1:{_closed_port()}'
  client = label_studio.Client(url, TOKEN, timeout=5)
  with pytest.raises(errors.UserError) as e:
    client.request('GET', '/api/projects')
  message = str(e.value)
  assert message.startswith(f'Label Studio does not answer at {url}')
  assert 'scripts/label_studio.sh start' in message and '\n' not in message
  assert e.value.__cause__ is None and e.value.__suppress_context__


def test_refused_token_is_one_line_and_never_shows_the_token(server):
  client = label_studio.Client(server, 'wrong-token')
  with pytest.raises(errors.UserError) as e:
    client.request('GET', '/api/tasks')
  message = str(e.value)
  assert message.startswith(f'Label Studio at {server} refuses the token in LABEL_STUDIO_TOKEN')
  assert 'wrong-token' not in message and 'wrong-token' not in repr(client)


def test_other_refusals_carry_label_studio_reason_on_one_line(server):
  client = label_studio.Client(server, TOKEN)
  assert client.request('GET', '/api/tasks', project=1) == {'ok': True}
  with pytest.raises(errors.UserError) as e:
    client.request('POST', '/api/projects', {'title': 'x'})
  message = str(e.value)
  assert 'refused POST /api/projects (HTTP 400' in message and 'bad' in message
  assert '\n' not in message and TOKEN not in message


def test_missing_token_names_the_variable(monkeypatch):
  monkeypatch.delenv('LABEL_STUDIO_TOKEN', raising=False)
  with pytest.raises(errors.UserError, match='LABEL_STUDIO_TOKEN is not set'):
    label_studio.Client.from_env('http://127.0.0.1:1')


def test_image_url_is_relative_to_the_served_root(tmp_path):
  root = tmp_path / 'root'
  assert label_studio.image_url(str(root / 'run' / 'img 1.png'), str(root)) == (
      '/data/local-files/?d=run%2Fimg+1.png')
  with pytest.raises(errors.UserError, match='LOCAL_FILES_DOCUMENT_ROOT'):
    label_studio.image_url(str(tmp_path / 'elsewhere.png'), str(root))


def test_score_falls_as_uncertainty_rises():
  scores = [label_studio.score(u) for u in (0.0, 0.1, 1.0, 7.5)]
  assert scores[0] == 1.0 and all(a > b > 0 for a, b in zip(scores, scores[1:]))
  assert np.isclose(label_studio.score(1.0), 0.5)
