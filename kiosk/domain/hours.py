"""Opening hours of a site, evaluated in the site's local time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class OpeningHours:
    """Weekly opening periods (local time) and closed dates; or always open."""

    tz: ZoneInfo
    always_open: bool
    weekly: tuple[tuple[tuple[time, time], ...], ...] = ((),) * 7
    closed_on: frozenset[date] = frozenset()

    def is_open(self, now: datetime) -> bool:
        """True when `now` (an aware datetime, normally UTC) falls in an opening period."""
        if now.tzinfo is None:
            raise ValueError("opening hours need an aware datetime")
        if self.always_open:
            return True
        local = now.astimezone(self.tz)
        if local.date() in self.closed_on:
            return False
        t = local.time().replace(tzinfo=None)
        return any(start <= t < end for start, end in self.weekly[local.weekday()])

    def next_opening(self, now: datetime) -> datetime | None:
        """The start of the next opening period after `now`, in local time (None if never)."""
        if self.always_open:
            return None
        local = now.astimezone(self.tz)
        for days in range(0, 15):
            day = local.date() + timedelta(days=days)
            if day in self.closed_on:
                continue
            for start, _end in self.weekly[day.weekday()]:
                begin = datetime.combine(day, start, tzinfo=self.tz)
                if begin > local:
                    return begin
        return None

    def describe(self) -> list[tuple[str, str]]:
        """(weekday name, "08:00-18:00, ...") for each weekday, for the closed screen."""
        rows = []
        for name, periods in zip(WEEKDAYS, self.weekly, strict=True):
            text = ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in periods)
            rows.append((name, text))
        return rows
