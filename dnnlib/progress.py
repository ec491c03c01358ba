"""Progress lines with an ETA for long jobs (metrics, comparisons).

Plain lines rather than a redrawn bar, so that they read the same on a terminal and in log.txt:
one when the job starts moving, then at most one per `interval` seconds, and always the last.
"""

from __future__ import annotations

import sys
import time
from typing import Optional

from dnnlib.util import format_time

#----------------------------------------------------------------------------
# Seconds left at the average pace so far; None while nothing is done yet or the total is unknown.

def eta_seconds(done: int, total: Optional[int], elapsed: float):
    if not total or done <= 0:
        return None
    return max(total - done, 0) * elapsed / done


def progress_line(what: str, done: int, total: Optional[int], elapsed: float) -> str:
    if not total:
        return f'{what}: {done} done, {format_time(elapsed)} elapsed'
    eta = eta_seconds(done, total, elapsed)
    left = 'done' if done >= total else ('eta ?' if eta is None else f'eta {format_time(eta)}')
    return f'{what}: {done}/{total} ({100 * done // total}%), {format_time(elapsed)} elapsed, {left}'

#----------------------------------------------------------------------------

class Progress:
    def __init__(self, what: str, total: Optional[int], interval: float = 10.0, file=None, clock=time.monotonic):
        self.what, self.total, self.interval = what, total, interval
        self.file, self.clock = file, clock
        self.start = clock()
        self.done = 0
        self.last_print = None

    def update(self, done: int) -> None:
        self.done = done
        now = self.clock()
        finished = self.total is not None and done >= self.total
        if not finished and self.last_print is not None and now - self.last_print < self.interval:
            return
        self.last_print = now
        print(progress_line(self.what, done, self.total, now - self.start), file=self.file or sys.stdout, flush=True)

    def step(self) -> None:
        self.update(self.done + 1)

#----------------------------------------------------------------------------
