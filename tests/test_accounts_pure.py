"""The pure parts of accounts: the login cookie, the e-mail hash and the providers' birth dates."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import math
import re
from datetime import MAXYEAR, date, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vchat.accounts.age import ADULT_AGE, birth_date, is_minor
from vchat.accounts.cookie import MAX_COOKIE_CHARS, issue_cookie, read_cookie
from vchat.accounts.email import email_hash

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW = 1_800_000_000.0
ACCOUNT = "acct-7Qz"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed(payload: str, key: bytes = KEY) -> str:
    """A cookie value with any payload, signed as the module signs: written here, not borrowed from it."""
    return f"{payload}.{b64(hmac.digest(key, payload.encode('ascii'), hashlib.sha256))}"


def signed_json(content: object, key: bytes = KEY) -> str:
    return signed(b64(json.dumps(content).encode()), key)


# --- login cookie ---------------------------------------------------------------------------------------


def test_a_cookie_names_its_account() -> None:
    assert read_cookie(KEY, issue_cookie(KEY, ACCOUNT, NOW, 3600), NOW) == ACCOUNT


def test_a_cookie_holds_only_the_account_and_the_expiry() -> None:
    value = issue_cookie(KEY, ACCOUNT, NOW + 0.9, 60)
    payload = value.split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(payload + "==")) == {"a": ACCOUNT, "e": int(NOW) + 60}
    assert value == signed(payload)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", value)


def test_a_cookie_is_valid_until_just_before_its_expiry() -> None:
    value = issue_cookie(KEY, ACCOUNT, 1000.7, 10)  # e = int(1010.7) = 1010
    assert read_cookie(KEY, value, 0) == ACCOUNT
    assert read_cookie(KEY, value, 1009) == ACCOUNT
    assert read_cookie(KEY, value, 1009.999) == ACCOUNT
    assert read_cookie(KEY, value, 1010) is None
    assert read_cookie(KEY, value, 1010.001) is None
    assert read_cookie(KEY, value, 10**12) is None


def test_a_clock_that_gives_nan_reads_no_cookie() -> None:
    assert read_cookie(KEY, issue_cookie(KEY, ACCOUNT, NOW, 60), math.nan) is None


def changed(value: str, at: int, char: str) -> str:
    return value[:at] + char + value[at + 1 :]


def test_tampering_is_refused() -> None:
    value = issue_cookie(KEY, ACCOUNT, NOW, 3600)
    payload, signature = value.split(".")
    forged = b64(json.dumps({"a": "admin", "e": int(NOW) + 3600}, separators=(",", ":")).encode())
    for bad in (
        changed(value, 0, "A" if value[0] != "A" else "B"),  # the payload
        changed(value, len(value) - 1, "A" if value[-1] != "A" else "B"),  # the signature
        changed(value, len(payload) + 1, "A" if signature[0] != "A" else "B"),
        f"{forged}.{signature}",
        f"{payload}.{signed(forged).split('.')[1]}",
        value.swapcase(),
    ):
        assert read_cookie(KEY, bad, NOW) is None


def test_another_key_is_refused() -> None:
    assert read_cookie(OTHER_KEY, issue_cookie(KEY, ACCOUNT, NOW, 3600), NOW) is None
    assert read_cookie(KEY, issue_cookie(OTHER_KEY, ACCOUNT, NOW, 3600), NOW) is None


def test_a_truncated_cookie_is_refused() -> None:
    value = issue_cookie(KEY, ACCOUNT, NOW, 3600)
    for end in range(len(value)):
        assert read_cookie(KEY, value[:end], NOW) is None
        assert read_cookie(KEY, value[end + 1 :], NOW) is None


@pytest.mark.parametrize("shape", ["{}.", ".{}", "{}.x", "x.{}", "{}.{}", "{}{}"])
def test_extra_dots_are_refused(shape: str) -> None:
    value = issue_cookie(KEY, ACCOUNT, NOW, 3600)
    assert read_cookie(KEY, shape.format(value, value), NOW) is None


def test_a_cookie_without_its_dot_or_with_two_is_refused() -> None:
    value = issue_cookie(KEY, ACCOUNT, NOW, 3600)
    assert read_cookie(KEY, value.replace(".", ""), NOW) is None
    assert read_cookie(KEY, value.replace(".", ".."), NOW) is None


@pytest.mark.parametrize("char", ["\u00e9", "\u2024", "\ud800", "\x00", "\ufffd", "\U0001f600"])
def test_non_ascii_is_refused_not_raised(char: str) -> None:
    value = issue_cookie(KEY, ACCOUNT, NOW, 3600)
    for at in (0, value.index("."), len(value) - 1):
        assert read_cookie(KEY, changed(value, at, char), NOW) is None
    assert read_cookie(KEY, value + char, NOW) is None
    assert read_cookie(KEY, char, NOW) is None
    assert read_cookie(KEY, f"{char}.{char}", NOW) is None


def test_a_cookie_over_the_size_limit_is_refused_even_if_signed() -> None:
    content: dict[str, object] = {"a": ACCOUNT, "e": int(NOW) + 60, "pad": ""}
    size = 0
    while len(signed_json(content)) <= MAX_COOKIE_CHARS:
        size += 1
        content["pad"] = "x" * size
    assert read_cookie(KEY, signed_json(content), NOW) is None
    content["pad"] = "x" * (size - 1)
    assert len(signed_json(content)) >= MAX_COOKIE_CHARS - 1
    assert read_cookie(KEY, signed_json(content), NOW) == ACCOUNT  # about the longest read
    assert read_cookie(KEY, "A" * (MAX_COOKIE_CHARS * 8), NOW) is None


@pytest.mark.parametrize(
    "content",
    [[ACCOUNT, int(NOW) + 60], ACCOUNT, int(NOW) + 60, None, True, 1.5],
    ids=["list", "string", "number", "null", "true", "float"],
)
def test_json_that_is_not_an_object_is_refused(content: object) -> None:
    assert read_cookie(KEY, signed_json(content), NOW) is None


E = int(NOW) + 60


@pytest.mark.parametrize(
    "content",
    [
        {"a": 7, "e": E},
        {"a": None, "e": E},
        {"a": [ACCOUNT], "e": E},
        {"a": "", "e": E},
        {"a": "a b", "e": E},
        {"a": "\u00e9", "e": E},
        {"a": "x" * 129, "e": E},
        {"e": E},
        {"a": ACCOUNT, "e": str(E)},
        {"a": ACCOUNT, "e": True},
        {"a": ACCOUNT, "e": float(E)},
        {"a": ACCOUNT, "e": None},
        {"a": ACCOUNT, "e": [E]},
        {"a": ACCOUNT},
    ],
)
def test_fields_of_the_wrong_type_are_refused(content: dict[str, object]) -> None:
    assert read_cookie(KEY, signed_json(content), NOW) is None


@pytest.mark.parametrize(
    "payload",
    [b64(b"not json"), b64(b'{"a":"x",'), b64(b"\xff\xfe\x00"), "eyJhIjoiYSJ9x", "eyJ=", "e+J/", ""],
)
def test_signed_payloads_that_are_not_json_objects_in_base64url_are_refused(payload: str) -> None:
    assert read_cookie(KEY, signed(payload), NOW) is None


@pytest.mark.parametrize(
    "value",
    [None, issue_cookie(KEY, ACCOUNT, NOW, 60).encode(), 7, [issue_cookie(KEY, ACCOUNT, NOW, 60)], {}],
    ids=["None", "bytes", "int", "list", "dict"],
)
def test_what_is_not_text_is_refused(value: object) -> None:
    assert read_cookie(KEY, value, NOW) is None


@pytest.mark.parametrize(
    ("key", "account", "now", "ttl"),
    [
        (KEY, "", NOW, 60),
        (KEY, "a b", NOW, 60),
        (KEY, "\u00e9", NOW, 60),
        (KEY, "a\n", NOW, 60),
        (KEY, "x" * 129, NOW, 60),
        (b"k" * 15, ACCOUNT, NOW, 60),
        (b"", ACCOUNT, NOW, 60),
        (KEY, ACCOUNT, math.nan, 60),
        (KEY, ACCOUNT, math.inf, 60),
        (KEY, ACCOUNT, NOW, 0),
        (KEY, ACCOUNT, NOW, -1),
        (KEY, ACCOUNT, NOW, math.nan),
        (KEY, ACCOUNT, NOW, math.inf),
        (KEY, "x" * 128, 1e300, 60),  # a cookie too long to be read back
    ],
)
def test_issue_cookie_checks_its_arguments(key: bytes, account: str, now: float, ttl: float) -> None:
    with pytest.raises(ValueError):
        issue_cookie(key, account, now, ttl)


def test_issue_cookie_takes_the_widest_arguments() -> None:
    longest = "".join(chr(0x21 + i % 94) for i in range(128))
    value = issue_cookie(b"k" * 16, longest, NOW, 0.001)  # e = int(NOW + 0.001): already past at NOW
    assert read_cookie(b"k" * 16, value, NOW) is None
    assert read_cookie(b"k" * 16, value, NOW - 0.5) == longest
    value = issue_cookie(b"k" * 16, longest, NOW, 86400 * 365)
    assert read_cookie(b"k" * 16, value, NOW) == longest


account_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
times = st.floats(-1e15, 1e15, allow_nan=False) | st.integers(-(10**12), 10**12).map(float)
ttls = st.floats(1e-6, 1e9, allow_nan=False) | st.integers(1, 10**9).map(float)


@given(
    st.text(max_size=600)
    | st.binary(max_size=100)
    | st.text(st.sampled_from("AZaz09-_.=é"), max_size=100)
    | st.builds(lambda a, b: f"{a}.{b}", st.text("AQgw-_", max_size=60), st.text("AQgw-_", max_size=60)),
    times,
)
def test_no_value_but_an_issued_cookie_is_read(value: object, now: float) -> None:
    """Arbitrary text or bytes never raise and never name an account: forging takes the key."""
    assert read_cookie(KEY, value, now) is None


@settings(max_examples=300)
@given(st.binary(min_size=16, max_size=40), account_ids, times, ttls, st.data())
def test_an_issued_cookie_is_read_exactly_until_its_expiry(
    key: bytes, account: str, now: float, ttl: float, data: st.DataObject
) -> None:
    value = issue_cookie(key, account, now, ttl)
    expiry = int(now + ttl)
    at = data.draw(
        st.floats(allow_nan=False) | st.floats(expiry - 2.0, expiry + 2.0) | st.sampled_from([expiry, now]),
        label="at",
    )
    assert read_cookie(key, value, at) == (account if at < expiry else None)
    assert read_cookie(OTHER_KEY if key != OTHER_KEY else KEY, value, at) is None


# --- e-mail hash ----------------------------------------------------------------------------------------


def test_the_hash_ignores_case_and_surrounding_space() -> None:
    expected = hmac.new(KEY, b"alice@example.com", hashlib.sha256).hexdigest()
    for written in (
        "alice@example.com",
        "Alice@Example.COM",
        "  alice@example.com\n",
        "\tALICE@EXAMPLE.COM ",
    ):
        assert email_hash(KEY, written) == expected


def test_the_hash_depends_on_the_key_and_the_address() -> None:
    assert email_hash(KEY, "alice@example.com") != email_hash(OTHER_KEY, "alice@example.com")
    assert email_hash(KEY, "alice@example.com") != email_hash(KEY, "alice@example.org")


def test_the_hash_is_64_hex_characters() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", email_hash(KEY, "b\u00f6b@example.com"))


@pytest.mark.parametrize(
    "written",
    [
        "",
        "   ",
        "alice",
        "alice.example.com",
        "@example.com",
        "alice@",
        " @ ",
        "@",
        "x" * 320 + "@y",
        "a@b@c",
        "a @b",
    ],
)
def test_what_is_no_address_is_refused(written: object) -> None:
    with pytest.raises(ValueError):
        email_hash(KEY, written)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        email_hash(KEY, 42)  # type: ignore[arg-type]


def test_the_longest_address_is_taken() -> None:
    address = "x" * 318 + "@y"
    assert len(address) == 320
    email_hash(KEY, f"  {address}  ")


# --- birth dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "text", "expected"),
    [
        ("facebook", "12/31/1990", (1990, 12, 31)),
        ("facebook", "01/02/2003", (2003, 1, 2)),
        ("facebook", "02/29/2000", (2000, 2, 29)),
        ("facebook", "12/31", None),
        ("facebook", "02/29", None),
        ("facebook", "1990", (1990, 12, 31)),  # the year alone: its last day, the least age
        ("vk", "1.2.1990", (1990, 2, 1)),
        ("vk", "01.02.1990", (1990, 2, 1)),
        ("vk", "1.12.1990", (1990, 12, 1)),
        ("vk", "31.1.1990", (1990, 1, 31)),
        ("vk", "31.12.1990", (1990, 12, 31)),
        ("vk", "5.11", None),
        ("vk", "05.11", None),
        ("vk", "29.2", None),
        ("oidc", "1990-12-31", (1990, 12, 31)),
        ("oidc", "0000-12-31", None),
        ("oidc", "0000-02-29", None),
        ("oidc", "1990", (1990, 12, 31)),
        ("oidc", "0000", None),
    ],
)
def test_each_documented_format(provider: str, text: str, expected: tuple[int, int, int] | None) -> None:
    assert birth_date(provider, text) == expected


@pytest.mark.parametrize(
    ("provider", "text"),
    [
        ("facebook", "02/30/2000"),
        ("facebook", "02/29/1900"),
        ("facebook", "13/01/2000"),
        ("facebook", "00/10/2000"),
        ("facebook", "31/12/1990"),  # day first
        ("facebook", "02/30"),
        ("facebook", "1/2/1990"),
        ("facebook", "1990-12-31"),
        ("vk", "31.4.2000"),
        ("vk", "29.2.2001"),
        ("vk", "0.1.2000"),
        ("vk", "1.13"),
        ("vk", "1.2.90"),
        ("vk", "001.2.1990"),
        ("vk", "1990"),
        ("oidc", "2001-13-01"),
        ("oidc", "2001-02-29"),
        ("oidc", "2001-1-1"),
        ("oidc", "2001-01"),
        ("oidc", "0000-02-30"),
        ("oidc", "90-01-01"),
        ("oidc", "12/31/1990"),
    ],
)
def test_dates_that_do_not_exist_or_are_misshapen_are_refused(provider: str, text: str) -> None:
    with pytest.raises(ValueError):
        birth_date(provider, text)


@pytest.mark.parametrize("provider", ["facebook", "vk", "oidc"])
@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "1990 ",
        " 1990",
        "1990\n",
        "abcd",
        "19 0",
        "1e3",
        "+990",
        "-990",
        "\uff11\uff19\uff19\uff10",
        "\u0662\u0660\u0660\u0660",
        "x" * 11,
    ],
)
def test_junk_is_refused(provider: str, text: str) -> None:
    with pytest.raises(ValueError):
        birth_date(provider, text)


@pytest.mark.parametrize("provider", ["", "google", "Facebook", "VK"])
def test_an_unknown_provider_is_refused(provider: str) -> None:
    with pytest.raises(ValueError):
        birth_date(provider, "1990-12-31")


def test_not_text_is_refused() -> None:
    with pytest.raises(ValueError):
        birth_date("oidc", 1990)  # type: ignore[arg-type]


def test_the_18th_birthday_makes_an_adult() -> None:
    born = (2008, 6, 15)
    assert is_minor(born, date(2026, 6, 14))
    assert not is_minor(born, date(2026, 6, 15))
    assert not is_minor(born, date(2026, 6, 16))
    assert is_minor(born, date(2008, 6, 15))


def test_a_29_february_birthday_comes_on_1_march_in_a_common_year() -> None:
    born = (2008, 2, 29)
    assert is_minor(born, date(2026, 2, 28))
    assert not is_minor(born, date(2026, 3, 1))


def test_a_year_alone_counts_from_its_last_day() -> None:
    born = birth_date("facebook", "2008")
    assert is_minor(born, date(2026, 12, 30))
    assert not is_minor(born, date(2026, 12, 31))


def test_no_year_says_nothing_of_age() -> None:
    for provider, text in (("facebook", "06/15"), ("vk", "15.6"), ("oidc", "0000-06-15")):
        assert not is_minor(birth_date(provider, text), date(2026, 6, 15))
    assert not is_minor(None, date(1, 1, 1))


@settings(max_examples=500)
@given(st.sampled_from(["facebook", "vk", "oidc", "other"]), st.text(max_size=12))
def test_any_short_text_raises_only_value_error(provider: str, text: str) -> None:
    with contextlib.suppress(ValueError):
        birth_date(provider, text)


@st.composite
def written_dates(draw: st.DrawFn) -> tuple[str, str, tuple[int, int, int] | None]:
    """(provider, text, what it reads as): a real date in one of the formats its provider documents."""
    day = draw(st.dates())
    y, m, d = day.year, day.month, day.day
    provider = draw(st.sampled_from(["facebook", "vk", "oidc"]))
    if provider == "facebook":
        forms = [
            (f"{m:02d}/{d:02d}/{y:04d}", (y, m, d)),
            (f"{m:02d}/{d:02d}", None),
            (f"{y:04d}", (y, 12, 31)),
        ]
    elif provider == "vk":
        dd = draw(st.sampled_from([f"{d}", f"{d:02d}"]))
        mm = draw(st.sampled_from([f"{m}", f"{m:02d}"]))
        forms = [(f"{dd}.{mm}.{y:04d}", (y, m, d)), (f"{dd}.{mm}", None)]
    else:
        forms = [
            (f"{y:04d}-{m:02d}-{d:02d}", (y, m, d)),
            (f"0000-{m:02d}-{d:02d}", None),
            (f"{y:04d}", (y, 12, 31)),
        ]
    text, expected = draw(st.sampled_from(forms))
    return provider, text, expected


@settings(max_examples=500)
@given(written_dates())
def test_every_written_date_reads_back(case: tuple[str, str, tuple[int, int, int] | None]) -> None:
    provider, text, expected = case
    assert birth_date(provider, text) == expected


def adult_day(born: tuple[int, int, int]) -> date:
    """The 18th birthday by datetime arithmetic, 29 February becoming 1 March in a common year."""
    year, month, day = born
    try:
        return date(year + ADULT_AGE, month, day)
    except ValueError:
        return date(year + ADULT_AGE, 3, 1)


@settings(max_examples=500)
@given(st.dates(max_value=date(MAXYEAR - ADULT_AGE, 12, 31)), st.dates(), st.integers(-3, 3))
def test_is_minor_agrees_with_datetime_arithmetic(born: date, today: date, near: int) -> None:
    key = (born.year, born.month, born.day)
    adult = adult_day(key)
    assert is_minor(key, today) == (today < adult)
    assume(adult.toordinal() + near <= date.max.toordinal())
    assert is_minor(key, adult + timedelta(days=near)) == (near < 0)
