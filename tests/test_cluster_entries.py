"""Entries of the shared queue: what an entry may hold, its text form both ways, and whom it suits, checked
against the matching engine."""

from __future__ import annotations

import math
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.cluster.entries import (
    FIELDS,
    QueueEntry,
    check_id,
    compatible,
    decode_entry,
    encode_entry,
    partner_partitions,
)
from vchat.matching.engine import MatchingEngine, Pair, Seeker
from vchat.protocol.messages import GENDERS, MAX_COUNTRIES, WANTS

ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)
codes = st.sampled_from(["DE", "FR", "US", "BR", "JP"]) | st.from_regex(r"[A-Z]{2}", fullmatch=True)
entries = st.builds(
    QueueEntry,
    session_id=ids,
    node_id=ids,
    gender=st.sampled_from(sorted(GENDERS)),
    country=st.none() | codes,
    want=st.sampled_from(sorted(WANTS)),
    countries=st.frozensets(codes, max_size=MAX_COUNTRIES),
    since=st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
)
# Few countries, so that country filters often meet.
small_entries = st.builds(
    QueueEntry,
    session_id=st.just("s"),
    node_id=st.just("n"),
    gender=st.sampled_from(sorted(GENDERS)),
    country=st.sampled_from([None, "DE", "FR"]),
    want=st.sampled_from(sorted(WANTS)),
    countries=st.frozensets(st.sampled_from(["DE", "FR", "US"])),
    since=st.just(0.0),
)


def entry(**fields: Any) -> QueueEntry:
    """A valid entry, with `fields` changed."""
    values: dict[str, Any] = {
        "session_id": "Nq3x-_9aBc",
        "node_id": "node-1",
        "gender": "f",
        "country": "DE",
        "want": "any",
        "countries": frozenset({"DE", "AT"}),
        "since": 1700000000.25,
    }
    values.update(fields)
    return QueueEntry(**values)


# What an entry holds


def test_an_entry_holds_its_fields_and_since_as_a_float() -> None:
    made = entry(since=12)
    assert made.since == 12.0 and type(made.since) is float
    assert made.seeker() == Seeker("Nq3x-_9aBc", "f", "DE", "any", frozenset({"DE", "AT"}))


@pytest.mark.parametrize(
    "fields",
    [
        {"session_id": ""},
        {"session_id": "a b"},
        {"session_id": "x" * 65},
        {"session_id": "é"},
        {"session_id": 7},
        {"node_id": "tab\t"},
        {"node_id": None},
        {"gender": "x"},
        {"gender": "M"},
        {"want": "u"},
        {"want": ["any"]},
        {"country": "de"},
        {"country": "DEU"},
        {"country": ""},
        {"country": "D1"},
        {"countries": {"DE"}},  # a set, not a frozenset
        {"countries": frozenset({"de"})},
        {"countries": frozenset({""})},
        {"countries": frozenset(a + b for a in "ABC" for b in string.ascii_uppercase)},  # 78 codes
        {"since": math.nan},
        {"since": math.inf},
        {"since": -math.inf},
        {"since": True},
        {"since": "1.5"},
    ],
)
def test_an_entry_refuses_what_no_client_or_node_sends(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        entry(**fields)


def test_check_id() -> None:
    assert check_id("host.example:4242/1") == "host.example:4242/1"
    for bad in ("", "a b", "x" * 65, "é", b"abc", None):
        with pytest.raises(ValueError, match="printable ASCII"):
            check_id(bad)


# The text form


@given(entries)
def test_an_entry_decodes_to_what_was_encoded(made: QueueEntry) -> None:
    values = encode_entry(made)
    assert len(values) == len(FIELDS) and all(value.isascii() for value in values)
    assert decode_entry(made.session_id, values) == made
    as_bytes = [value.encode() for value in values]
    assert decode_entry(made.session_id.encode(), as_bytes) == made


def test_the_text_form() -> None:
    assert encode_entry(entry()) == ["node-1", "f", "any", "DE", "AT,DE", "1700000000.25"]
    assert encode_entry(entry(country=None, countries=frozenset(), since=-0.5)) == [
        "node-1", "f", "any", "", "", "-0.5",
    ]  # fmt: skip
    assert decode_entry("s", ["n", "u", "m", "", "", "1e+16"]) == QueueEntry(
        "s", "n", "u", None, "m", frozenset(), 1e16
    )


GOOD = ["n", "f", "any", "DE", "AT,DE", "1.5"]


@pytest.mark.parametrize(
    "index, value",
    [
        (0, None),
        (0, ""),
        (0, "a b"),
        (1, "x"),
        (1, b"\xff"),
        (2, "u"),
        (3, "de"),
        (3, "DEU"),
        (4, "AT,"),
        (4, ",AT"),
        (4, "AT,AT"),
        (4, "AT DE"),
        (4, ",".join(["DE"] * 65)),
        (5, ""),
        (5, "nan"),
        (5, "inf"),
        (5, "1e999"),
        (5, "1_0"),
        (5, " 1"),
        (5, "0x10"),
        (5, "\u0661"),  # an Arabic-Indic digit: float() would take it
        (5, "1" * 40),
        (5, 1.5),
    ],
)
def test_decoding_refuses_what_encoding_cannot_write(index: int, value: object) -> None:
    values: list[object] = list(GOOD)
    values[index] = value
    with pytest.raises(ValueError):
        decode_entry("s", values)


def test_decoding_refuses_a_bad_session_id_or_count() -> None:
    for session in ("", "a b", b"\xff", None):
        with pytest.raises(ValueError):
            decode_entry(session, GOOD)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="6 fields"):
        decode_entry("s", GOOD[:5])
    with pytest.raises(ValueError, match="6 fields"):
        decode_entry("s", [*GOOD, "x"])


garbage_values = st.none() | st.text(max_size=20) | st.binary(max_size=20) | st.integers() | st.floats()
plausible = st.sampled_from(["n", "f", "m", "u", "any", "DE", "AT,DE", "", "1.5", "-2e3", "nan"])


@given(
    st.text(max_size=70) | st.binary(max_size=70),
    st.lists(garbage_values | plausible | plausible.map(str.encode), max_size=8),
)
def test_decoding_garbage_gives_an_entry_or_a_value_error(session: str | bytes, values: list[object]) -> None:
    try:
        decoded = decode_entry(session, values)
    except ValueError:
        return
    assert decode_entry(decoded.session_id, encode_entry(decoded)) == decoded


# Whom an entry suits


@given(small_entries, small_entries)
def test_compatible_is_what_the_engine_pairs(a: QueueEntry, b: QueueEntry) -> None:
    engine = MatchingEngine()
    first = Seeker("a", a.gender, a.country, a.want, a.countries)
    second = Seeker("b", b.gender, b.country, b.want, b.countries)
    assert engine.search(first, 0.0) is None
    paired = engine.search(second, 1.0)
    assert (paired == Pair("a", "b")) == compatible(a, b) == compatible(b, a)
    assert paired is None or paired == Pair("a", "b")


@pytest.mark.parametrize("gender", sorted(GENDERS))
@pytest.mark.parametrize("want", sorted(WANTS))
def test_partner_partitions_are_those_compatible_by_gender(gender: str, want: str) -> None:
    seeker = entry(gender=gender, want=want, country=None, countries=frozenset())
    expected = {
        (other, other_want)
        for other in GENDERS
        for other_want in WANTS
        if compatible(seeker, entry(gender=other, want=other_want, country=None, countries=frozenset()))
    }
    found = partner_partitions(gender, want)
    assert set(found) == expected and len(found) == len(expected)


def test_partner_partitions_refuse_unknown_values() -> None:
    with pytest.raises(ValueError):
        partner_partitions("x", "any")
    with pytest.raises(ValueError):
        partner_partitions("m", "u")
