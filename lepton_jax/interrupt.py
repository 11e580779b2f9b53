"""Turns SIGINT/SIGTERM into a request the training loop honours at the next chunk boundary.

The loop saves a checkpoint and raises `Interrupted`; the launcher prints one line and exits with 128 + signal.
A second Ctrl-C while waiting aborts at once (KeyboardInterrupt), for when a chunk is very long.
"""

import signal
import threading


class Interrupted(Exception):
    """Training stopped on a signal after saving a checkpoint."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


class InterruptGuard:
    """Context manager: while active, SIGINT/SIGTERM set `signum` instead of killing the process."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        del frame
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
