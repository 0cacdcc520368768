"""Tests marked `label_studio` need a running Label Studio server; without
LABEL_STUDIO_URL in the environment they are deselected (reported as such),
never passed."""

import os


def pytest_collection_modifyitems(config, items):
  if os.environ.get('LABEL_STUDIO_URL'):
    return
  dropped = [item for item in items if item.get_closest_marker('label_studio')]
  if dropped:
    config.hook.pytest_deselected(items=dropped)
    items[:] = [item for item in items if not item.get_closest_marker('label_studio')]
