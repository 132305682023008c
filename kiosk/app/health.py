"""Health guards before money: free space on the journal's disk, a journal that can be written,
a clock that has not jumped. Checked on the engine thread at each tick; a change becomes a
fault (or its clearing) of `Device.SYSTEM`, which the engine journals and which keeps the
automat out of service (no new customer can pay) until it clears by itself.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from kiosk.domain.site import HealthSection

#: a backwards step smaller than this is the clock being disciplined, not a jump
CLOCK_TOLERANCE = 2.0


class HealthGuard:
    """`problems(now)`: what is wrong right now, in words for the service screen and journal.

    The clock is compared with the monotonic clock since the last look: a wall clock that went
    backwards (by more than a tolerance) or forwards by more than the site's span has jumped;
    the automat stays out of service for the settle time after the last jump."""

    def __init__(
        self,
        health: HealthSection,
        journal_file: Path,
        *,
        clock: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
        free_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.health = health
        self.watch_clock = clock
        self.journal_file = journal_file
        self.monotonic = monotonic
        self.free_bytes = free_bytes or (lambda p: shutil.disk_usage(p).free)
        self._last: tuple[datetime, float] | None = None
        self._jump: tuple[str, float] | None = None  # what jumped, when (monotonic)

    def problems(self, now: datetime) -> list[str]:
        out = []
        folder = self.journal_file.parent
        try:
            free = self.free_bytes(folder)
            floor = self.health.disk_floor_mb * 1024 * 1024
            if free < floor:
                out.append(f"disk: {free // (1024 * 1024)} MB free on {folder}, "
                           f"under the floor of {self.health.disk_floor_mb} MB")  # fmt: skip
        except OSError as err:
            out.append(f"disk: {folder} not readable: {err}")
        if not os.access(self.journal_file, os.W_OK) or not os.access(folder, os.W_OK):
            out.append(f"journal: {self.journal_file} cannot be written")
        jumped = self._clock(now) if self.watch_clock else None
        if jumped:
            out.append(jumped)
        return out

    def _clock(self, now: datetime) -> str | None:
        mono = self.monotonic()
        if self._last is not None:
            then, then_mono = self._last
            drift = (now - then).total_seconds() - (mono - then_mono)
            if drift < -CLOCK_TOLERANCE:
                self._jump = (f"clock: stepped back {-drift:.0f} s at {now:%Y-%m-%d %H:%M:%S} UTC",
                              mono)  # fmt: skip
            elif drift > self.health.clock_forward_minutes * 60:
                self._jump = (f"clock: jumped {drift / 3600:.1f} h forward at "
                              f"{now:%Y-%m-%d %H:%M:%S} UTC", mono)  # fmt: skip
        self._last = (now, mono)
        if self._jump is not None:
            what, when = self._jump
            if mono - when < self.health.clock_settle_seconds:
                return what
            self._jump = None
        return None
