"""The one exception type for user mistakes.

A `UserError` is something the person launching a run can fix (an unknown env, a bad value, a missing or
corrupt file). The launcher prints its message as a single line and exits non-zero, with no traceback.
"""


class UserError(ValueError):
    """A mistake in a flag, config value or input file, explained in one line."""
