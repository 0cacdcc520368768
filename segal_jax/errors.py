"""The one place user-facing errors come from.

Library code raises `UserError` for anything the user can fix (bad flags, missing
data, corrupt checkpoints). `launch/` entry points turn it into one line on
stderr and a non-zero exit, without a traceback.
"""


class UserError(Exception):
  """A problem the user can fix: one sentence naming it, and the fix."""

  def __init__(self, problem: str, fix: str | None = None):
    self.problem = problem.rstrip('.')
    self.fix = fix.rstrip('.') if fix else None
    super().__init__(str(self))

  def __str__(self) -> str:
    if self.fix:
      return f'{self.problem}; {self.fix}.'
    return f'{self.problem}.'
