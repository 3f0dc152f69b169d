"""Working days for ticket deadlines: China's official calendar, the operator's holiday file, the hotline's day.

Guangdong's time limits count working days: consultations 2, help requests and suggestions 10, complaints
and reports 15. A day is a working day when, in this order:

* the holiday file (TOML, ``holidays`` and ``working_days``: lists of local dates) says so: the operator
  knows best, so it also overrides the years below;
* else chinese-calendar's official calendar says so (holidays moved onto weekdays and the weekend days
  made working days in exchange, 调休) for the years it knows;
* else it is Monday to Friday, and the first such day of each unknown year logs one warning.

Days are the hotline's local days (Asia/Shanghai unless told otherwise). Datetimes in and out are aware.
"""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from datetime import date, datetime, timedelta, timezone, tzinfo
from pathlib import Path

import chinese_calendar

from base.vocabulary import HOTLINE_TZ

log = logging.getLogger(__name__)

DEFAULT_HOLIDAY_FILE = Path(__file__).with_name("holidays.toml")

_ONE_DAY = timedelta(days=1)


class WorkingCalendar:
    """Which local days are working days, and the deadlines and delays counted in them."""

    def __init__(self, holiday_file: str | os.PathLike | None = None, tz: tzinfo = HOTLINE_TZ):
        """Read ``holiday_file`` (the shipped orders/holidays.toml when None); ValueError if it is unusable."""
        self._file = Path(holiday_file) if holiday_file is not None else DEFAULT_HOLIDAY_FILE
        self._tz = tz
        self._days: dict[date, bool] = _read_holiday_file(self._file)
        self._warned: set[int] = set()
        self._lock = threading.Lock()

    def is_working_day(self, day: date) -> bool:
        """True when the local date ``day`` is a working day."""
        if not isinstance(day, date) or isinstance(day, datetime):
            # A datetime's date depends on its zone: which local day is meant is the caller's to decide.
            raise TypeError(f"is_working_day() takes a local date, not {day!r}")
        known = self._days.get(day)
        if known is None:
            known = self._days[day] = self._official(day)
        return known

    def working_days_deadline(self, start: datetime, days: int) -> datetime:
        """The end of the ``days``-th working day after the local day of ``start`` (exclusive: midnight local
        time that ends that day, returned as an aware datetime in UTC). days >= 1; 0 or negative raises ValueError."""
        _require_aware(start, "start")
        if not isinstance(days, int):
            raise TypeError(f"days must be a whole number of working days, not {days!r}")
        if days < 1:
            raise ValueError(f"a deadline needs at least 1 working day, not {days}")
        day = start.astimezone(self._tz).date()
        counted = 0
        while counted < days:
            day += _ONE_DAY
            counted += self.is_working_day(day)
        end = day + _ONE_DAY
        return datetime(end.year, end.month, end.day, tzinfo=self._tz).astimezone(timezone.utc)

    def working_days_between(self, start: datetime, end: datetime) -> int:
        """Working days after the local day of ``start`` up to and including the local day of ``end`` (0 when
        ``end <= start``). A ticket opened at ``start`` and answered at ``end`` with a limit of ``days`` is
        ``working_days_between(start, end) - days`` working days late when that is positive."""
        _require_aware(start, "start")
        _require_aware(end, "end")
        if end <= start:
            return 0
        day = start.astimezone(self._tz).date()
        last = end.astimezone(self._tz).date()
        count = 0
        while day < last:
            day += _ONE_DAY
            count += self.is_working_day(day)
        return count

    def _official(self, day: date) -> bool:
        try:
            return chinese_calendar.is_workday(day)
        except NotImplementedError:
            pass
        with self._lock:
            first = day.year not in self._warned
            self._warned.add(day.year)
        if first:
            log.warning("the official calendar for %d is not known to chinese-calendar %s; counting weekends and "
                        "the holidays in %s", day.year, chinese_calendar.__version__, self._file)
        return day.weekday() < 5


def _require_aware(moment: datetime, name: str) -> None:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, not {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got the naive {moment.isoformat()}")


def _read_holiday_file(path: Path) -> dict[date, bool]:
    """{date: is a working day} from the file; ValueError naming the file and what is wrong with it."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"holiday file {path}: cannot read it: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"holiday file {path}: not valid TOML: {e}") from None
    unknown = sorted(set(data) - {"holidays", "working_days"})
    if unknown:
        raise ValueError(f"holiday file {path}: unknown key(s) {', '.join(unknown)}; "
                         "only holidays and working_days are read")
    days: dict[date, bool] = {}
    for key, working in (("holidays", False), ("working_days", True)):
        listed = data.get(key, [])
        if not isinstance(listed, list):
            raise ValueError(f"holiday file {path}: {key} must be a list of dates, like [2027-01-01]")
        for item in listed:
            # tomllib gives a datetime (a date subclass) for 2027-01-01T00:00; a day is meant, so refuse it.
            if not isinstance(item, date) or isinstance(item, datetime):
                raise ValueError(f"holiday file {path}: {key} holds {item!r}; write bare TOML dates like "
                                 "2027-01-01, without quotes or a time")
            days[item] = working
    both = sorted(set(data.get("holidays", [])) & set(data.get("working_days", [])))
    if both:
        raise ValueError(f"holiday file {path}: listed as both a holiday and a working day: "
                         f"{', '.join(d.isoformat() for d in both)}")
    return days
