"""Birth dates as the login providers give them, read only to refuse a login under 18: never kept.

Facebook gives `MM/DD/YYYY`, `MM/DD` or `YYYY` (as the user shares it); VK gives `D.M.YYYY` or `D.M` (no year
when hidden); OpenID Connect's `birthdate` is `YYYY-MM-DD`, `0000-MM-DD` (year withheld) or `YYYY`. A date
without a year says nothing of age. Pure Python: `today` is passed in.
"""

from __future__ import annotations

import re
from datetime import date

ADULT_AGE = 18

_FACEBOOK = re.compile(r"(?:(\d{2})/(\d{2})/)?(\d{4})|(\d{2})/(\d{2})", re.ASCII)
_VK = re.compile(r"(\d{1,2})\.(\d{1,2})(?:\.(\d{4}))?", re.ASCII)
_OIDC = re.compile(r"(\d{4})(?:-(\d{2})-(\d{2}))?", re.ASCII)


def _date(year: str | None, month: str | None, day: str | None) -> tuple[int, int, int] | None:
    """(year, month, day), a year alone meaning its last day; None for no year. ValueError for no date."""
    if year is None or int(year) == 0:
        if month is not None and day is not None:
            date(2000, int(month), int(day))  # a real day of the year, or ValueError
        return None
    if month is None or day is None:
        return int(year), 12, 31  # the latest birthday that year: the least age
    found = date(int(year), int(month), int(day))
    return found.year, found.month, found.day


def birth_date(provider: str, text: str) -> tuple[int, int, int] | None:
    """The birth date in `text` as `provider` writes it ("facebook", "vk", "oidc"): (year, month, day), None if
    it has no year; ValueError if it is not such a date."""
    if not isinstance(text, str) or len(text) > 10:
        raise ValueError("not a birth date")
    if provider == "facebook":
        match = _FACEBOOK.fullmatch(text)
        if match is None:
            raise ValueError(f"not a Facebook birthday: {text!r}")
        month, day, year, month_only, day_only = match.groups()
        return _date(year, month or month_only, day or day_only)
    if provider == "vk":
        match = _VK.fullmatch(text)
        if match is None:
            raise ValueError(f"not a VK birth date: {text!r}")
        day, month, year = match.groups()
        return _date(year, month, day)
    if provider == "oidc":
        match = _OIDC.fullmatch(text)
        if match is None:
            raise ValueError(f"not an OpenID Connect birthdate: {text!r}")
        year, month, day = match.groups()
        return _date(year, month, day)
    raise ValueError(f"unknown provider {provider!r}")


def is_minor(born: tuple[int, int, int] | None, today: date) -> bool:
    """Whether someone born on `born` is under `ADULT_AGE` on `today`; False when the year is unknown."""
    if born is None:
        return False
    year, month, day = born
    age = today.year - year - ((today.month, today.day) < (month, day))
    return age < ADULT_AGE
