"""Cron schedules as CronJobs use them: five fields, names, steps, ranges and @macros.

``minute hour day-of-month month day-of-week`` with ``*``, ``a-b``, ``a,b``, ``*/n`` and
``a-b/n``; month and weekday names (``jan``, ``mon``); ``7`` is Sunday too; ``?`` equals ``*``;
and ``@yearly``/``@annually``, ``@monthly``, ``@weekly``, ``@daily``/``@midnight``,
``@hourly``. When both day fields are restricted a day matches if *either* does (classic
cron, which Kubernetes' parser follows). ``CRON_TZ=Zone`` / ``TZ=Zone`` prefixes select a time
zone, as does the CronJob's ``spec.timeZone``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {name: i for i, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)}
WEEKDAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}


class CronError(ValueError):
    """An invalid schedule; the message says which part."""


def _value(text: str, names: dict[str, int], lo: int, hi: int) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    try:
        value = int(text)
    except ValueError:
        raise CronError(f"failed to parse int from {text}") from None
    if not lo <= value <= hi:
        raise CronError(f"end of range ({value}) above maximum ({hi})" if value > hi else
                        f"beginning of range ({value}) below minimum ({lo})")
    return value


def _field(text: str, lo: int, hi: int, names: dict[str, int] | None = None) -> tuple[frozenset[int], bool]:
    """The allowed values of one field, and whether it was a bare ``*``."""
    names = names or {}
    values: set[int] = set()
    star = text in ("*", "?")
    for part in text.split(","):
        if not part:
            raise CronError("empty field")
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            try:
                step = int(step_text)
            except ValueError:
                raise CronError(f"failed to parse int from {step_text}") from None
            if step <= 0:
                raise CronError("step must be positive")
        if rng in ("*", "?"):
            start, end = lo, hi
        elif "-" in rng:
            a, _, b = rng.partition("-")
            start, end = _value(a, names, lo, hi), _value(b, names, lo, hi)
            if start > end:
                raise CronError(f"beginning of range ({start}) beyond end of range ({end})")
        else:
            start = _value(rng, names, lo, hi)
            end = hi if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values), star


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool
    zone: ZoneInfo | None = None

    def _day_matches(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow

    def next_after(self, t: datetime) -> datetime:
        """The first firing time strictly after ``t`` (an aware datetime), in ``t``'s zone."""
        zone = self.zone or t.tzinfo
        local = t.astimezone(zone).replace(second=0, microsecond=0, tzinfo=None) + timedelta(minutes=1)
        for _ in range(366 * 5):
            if local.month in self.months and self._day_matches(local):
                for hour in sorted(h for h in self.hours if h >= local.hour):
                    first = local.minute if hour == local.hour else 0
                    for minute in sorted(m for m in self.minutes if m >= first):
                        return local.replace(hour=hour, minute=minute).replace(tzinfo=zone).astimezone(t.tzinfo)
            local = (local + timedelta(days=1)).replace(hour=0, minute=0)
        raise CronError("schedule never fires")


def parse_schedule(text: str, time_zone: str | None = None) -> Schedule:
    spec = text.strip()
    zone_name = time_zone
    if spec.startswith(("CRON_TZ=", "TZ=")):
        prefix, _, spec = spec.partition(" ")
        zone_name = prefix.split("=", 1)[1]
        spec = spec.strip()
    zone = None
    if zone_name:
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise CronError(f"unknown time zone {zone_name}") from None
    spec = MACROS.get(spec.lower(), spec)
    fields = spec.split()
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields, found {len(fields)}: {text}")
    minutes, _ = _field(fields[0], 0, 59)
    hours, _ = _field(fields[1], 0, 23)
    days, any_day = _field(fields[2], 1, 31)
    months, _ = _field(fields[3], 1, 12, MONTHS)
    weekdays, any_weekday = _field(fields[4], 0, 7, WEEKDAYS)
    weekdays = frozenset(d % 7 for d in weekdays)
    return Schedule(minutes, hours, days, months, weekdays, any_day, any_weekday, zone)
