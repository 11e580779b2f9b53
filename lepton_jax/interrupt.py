"""Ctrl-C and SIGTERM, at any phase of a run: one line saying what was saved, and exit code 128 + signal.

Two guards, both raising `Interrupted` (the launcher prints its message and exits with 128 + signal):

- `InterruptGuard`, around the training steps: a signal is a request that the loop honours at its next step
  boundary, after saving a checkpoint. A second Ctrl-C while waiting stops at once, for when a step is very long.
- `StopAtOnce`, for everything else (building the model, restoring, compiling, the final evaluation): a signal
  stops at once, with the message its `describe()` gives (what is saved, and how to go on).

`Interrupted` is a `BaseException`, like `KeyboardInterrupt`: raised from a signal handler it may surface inside any
code, and an `except Exception` there (a checkpoint reader's "not readable" fallback, say) must not swallow it.
"""

import signal
import sys
import threading
from collections.abc import Callable


class Interrupted(BaseException):
    """The run stopped on a signal; the message says what was saved."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class InterruptGuard:
    """Context manager: while active, SIGINT/SIGTERM set `signum` instead of stopping the process.

    Args:
      describe: the message of a second Ctrl-C, which stops at once (`Interrupted`); without it that second Ctrl-C is
        a `KeyboardInterrupt`.
    """

    def __init__(self, describe: Callable[[], str] | None = None):
        self.signum: int | None = None
        self.describe = describe
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None and signum == signal.SIGINT:
            if self.describe is None:
                raise KeyboardInterrupt
            raise Interrupted(signum, self.describe())
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        return False


class StopAtOnce(InterruptGuard):
    """Context manager: while active, SIGINT/SIGTERM raise `Interrupted(signum, describe())` at once.

    The exception surfaces when the main thread next runs Python code (a compile in progress finishes first).
    """

    def __init__(self, describe: Callable[[], str]):
        super().__init__(describe)
        self._dropped: Interrupted | None = None  # a signal's exception that a gc callback dropped

    def _handle(self, signum, frame):
        del frame
        self.signum = signum
        raise Interrupted(signum, self.describe())

    def __enter__(self):
        self._dropped = None
        self._unraisable_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        return super().__enter__()

    def _unraisable(self, unraisable):
        if isinstance(unraisable.exc_value, Interrupted):  # ours: re-raised by __exit__, silently till then
            self._dropped = unraisable.exc_value
        else:
            self._unraisable_hook(unraisable)

    def __exit__(self, exc_type, *exc):
        super().__exit__(exc_type, *exc)
        sys.unraisablehook = self._unraisable_hook
        # Python drops an exception raised inside a garbage-collector callback (jax registers one) with only an
        # "Exception ignored" note: a signal that landed there is honoured here, at the end of the phase at the latest.
        if exc_type is None:
            self.raise_dropped()
        return False

    def raise_dropped(self) -> None:
        """Raises `Interrupted` now if a signal's exception was dropped (reported as unraisable) since `__enter__`."""
        if self._dropped is not None:
            signum, self._dropped = self._dropped.signum, None
            raise Interrupted(signum, self.describe())
