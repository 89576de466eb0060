"""A waiting user's entry in the shared queue (docs/cluster.md, "Matching"): what it holds, its text form
checked both ways, and whom it suits by preference.

An entry holds the waiting user's own attributes and nothing else: its session id, the node that holds the
session, its gender and country, its filters (the gender it wants, the countries it accepts), and when it
started waiting. Never a partner, a past partner or a pair.

In Redis (`vchat.cluster.queue`) an entry is a hash whose fields are `FIELDS`, each ASCII text:

    node        the node id: 1 to 64 printable ASCII characters, no space
    gender      m, f or u (the values `hello` takes)
    want        any, m or f (the values `search` takes)
    country     the user's ISO 3166 alpha-2 code, upper case; empty when unknown
    countries   the accepted countries' codes, upper case, sorted, joined by commas; empty for "any"
    since       when the user started waiting, seconds since the epoch on its node's clock: Python's repr of
                the float, exact both ways

Decoding takes text or bytes (Redis replies with either, by the client's settings) and raises ValueError,
saying why, for anything that `encode_entry` could not have written: a node never acts on, or fails on,
an entry it does not understand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vchat.matching.engine import Seeker
from vchat.protocol.messages import GENDERS, MAX_COUNTRIES, WANTS

FIELDS = ("node", "gender", "want", "country", "countries", "since")
"""The fields of an entry's hash, in the order `encode_entry` gives and `decode_entry` takes their values."""

_ID = re.compile(r"[!-~]{1,64}")  # session and node ids, as vchat.cluster.presence takes node ids
_COUNTRY = re.compile(r"[A-Z]{2}")
_SINCE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_MAX_SINCE_CHARS = 32  # repr of any finite float fits
_MAX_COUNTRIES_CHARS = 3 * MAX_COUNTRIES


def check_id(value: object, what: str = "an id") -> str:
    """`value`, if it can be a session or node id (1 to 64 printable ASCII characters, no space); ValueError
    if not."""
    if type(value) is not str or not _ID.fullmatch(value):
        raise ValueError(f"{what} is 1 to 64 printable ASCII characters without spaces, not {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """One user waiting in the shared queue: who it is, where it is connected, whom it accepts, and since
    when it waits. Checked when made: ValueError if any field could not be sent by a client or a node."""

    session_id: str
    node_id: str
    gender: str
    country: str | None
    want: str
    countries: frozenset[str]
    since: float

    def __post_init__(self) -> None:
        check_id(self.session_id, "a session id")
        check_id(self.node_id, "a node id")
        if type(self.gender) is not str or self.gender not in GENDERS:
            raise ValueError(f"gender is one of {sorted(GENDERS)}, not {self.gender!r}")
        if type(self.want) is not str or self.want not in WANTS:
            raise ValueError(f"want is one of {sorted(WANTS)}, not {self.want!r}")
        if self.country is not None and not _is_country(self.country):
            raise ValueError(f"country is an upper-case ISO 3166 alpha-2 code or None, not {self.country!r}")
        countries = self.countries
        if (
            not isinstance(countries, frozenset)
            or len(countries) > MAX_COUNTRIES
            or not all(_is_country(code) for code in countries)
        ):
            raise ValueError(
                f"countries is a frozenset of at most {MAX_COUNTRIES} upper-case ISO 3166 alpha-2 codes"
            )
        since = self.since
        if isinstance(since, bool) or not isinstance(since, int | float) or not math.isfinite(since):
            raise ValueError(f"since is a finite number of seconds, not {since!r}")
        object.__setattr__(self, "since", float(since))

    def seeker(self) -> Seeker:
        """This user as the matching engine takes it."""
        return Seeker(self.session_id, self.gender, self.country, self.want, self.countries)


def _is_country(code: object) -> bool:
    return type(code) is str and _COUNTRY.fullmatch(code) is not None


def encode_entry(entry: QueueEntry) -> list[str]:
    """The values of `entry`'s hash, in `FIELDS` order (its session id names the hash)."""
    return [
        entry.node_id,
        entry.gender,
        entry.want,
        entry.country or "",
        ",".join(sorted(entry.countries)),
        repr(entry.since),
    ]


def _text(value: object, name: str, limit: int) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"the entry's {name} is not ASCII") from None
    if not isinstance(value, str):
        raise ValueError(f"the entry has no {name}" if value is None else f"the entry's {name} is not text")
    if len(value) > limit:
        raise ValueError(f"the entry's {name} is longer than {limit} characters")
    return value


def decode_entry(session_id: str | bytes, values: Sequence[object]) -> QueueEntry:
    """The entry of `session_id` whose hash holds `values` (in `FIELDS` order, text or bytes, None for a
    missing field); ValueError, saying why, if they are not an entry's."""
    session = _text(session_id, "session id", 64)
    if len(values) != len(FIELDS):
        raise ValueError(f"an entry has {len(FIELDS)} fields, not {len(values)}")
    node, gender, want, country, countries, since = (
        _text(value, name, _MAX_COUNTRIES_CHARS) for value, name in zip(values, FIELDS, strict=True)
    )
    if len(since) > _MAX_SINCE_CHARS or not _SINCE.fullmatch(since):
        raise ValueError(f"the entry's since is not a number: {since!r}")
    codes = countries.split(",") if countries else []
    if len(set(codes)) != len(codes):
        raise ValueError("the entry's countries repeat a code")
    return QueueEntry(
        session, node, gender, country or None, want, frozenset(codes), float(since)
    )  # checks the rest; float() of a too-large number is inf, which it refuses


def partner_partitions(gender: str, want: str) -> tuple[tuple[str, str], ...]:
    """The (gender, want) partitions of the queue whose users accept a seeker of `gender` and whom a seeker
    wanting `want` accepts, as the matching engine pairs them."""
    if gender not in GENDERS or want not in WANTS:
        raise ValueError(f"unknown gender {gender!r} or want {want!r}")
    genders = sorted(GENDERS) if want == "any" else [want]
    return tuple(
        (other, other_want) for other in genders for other_want in ("any", gender) if other_want in WANTS
    )


def compatible(a: QueueEntry, b: QueueEntry) -> bool:
    """Whether `a` and `b` accept each other by gender and country, as the matching engine requires
    (recent partners and blocked pairs aside: the queue knows nothing of them)."""
    return (
        (a.want == "any" or a.want == b.gender)
        and (b.want == "any" or b.want == a.gender)
        and (not a.countries or b.country in a.countries)
        and (not b.countries or a.country in b.countries)
    )
