"""Graceful stop on SIGTERM: finish the current iteration, write a final snapshot, exit cleanly.

Cluster schedulers send SIGTERM some seconds before SIGKILL. Instead of losing everything since
the last snapshot, the loop treats the signal like `abort_fn`: the iteration in flight completes,
the tick runs with a snapshot and training state, and the process exits with status 0, ready for
`--resume=latest`. SIGKILL cannot be caught; atomic writes cover it (training/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import signal
import threading

#----------------------------------------------------------------------------
# Set by the handler, read by the loop once per iteration.

class StopRequest:
    def __init__(self):
        self.requested = False
        self.signum = None

    def _handler(self, signum, _frame):
        self.requested = True
        self.signum = signum

#----------------------------------------------------------------------------
# Installs the SIGTERM handler for the duration of the loop (main thread only; elsewhere, e.g. a
# loop run from a worker thread, signals cannot be caught and the request simply never comes).

@contextlib.contextmanager
def stop_on_sigterm():
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, stop._handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)

#----------------------------------------------------------------------------
