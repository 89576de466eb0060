"""The fuzz targets of fuzz/targets.py, run briefly under Hypothesis so that CI catches what the fuzzers would.

The same check functions as the atheris harnesses (docs/fuzzing.md): random bytes, near-valid inputs built
by strategies (maps of the right `type` in both codecs, STUN messages with the cookie and real attribute
types, signed login cookies, birth dates in each provider's format), every seed of the corpus, and every
input kept under fuzz/regressions/.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vchat.accounts.cookie import issue_cookie
from vchat.protocol.codec import CODECS, JSON, MSGPACK, Codec
from vchat.protocol.messages import CLIENT_TYPES, GENDERS, REPORT_REASONS, WANTS
from vchat.stun.message import (
    MAGIC_COOKIE,
    Attr,
    Message,
    MessageClass,
    encode_address,
    encode_message,
    encode_xor_address,
)
from vchat.stun.responder import _CACHE_LIMIT, Responder
from vchat.stun.testing import binding_request

ROOT = Path(__file__).resolve().parent.parent


def _load_targets() -> ModuleType:
    """fuzz/targets.py, loaded by its path: it is not part of the installed package."""
    spec = importlib.util.spec_from_file_location("vchat_fuzz_targets", ROOT / "fuzz" / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


targets = _load_targets()
SEEDS = [
    (target, name, data) for target, seeds in targets.seed_inputs().items() for name, data in seeds.items()
]
REGRESSIONS = list(targets.regression_inputs())


@pytest.mark.parametrize(("target", "name", "data"), SEEDS, ids=[f"{t}/{n}" for t, n, _ in SEEDS])
def test_seed_corpus(target: str, name: str, data: bytes) -> None:
    targets.TARGETS[target](data)


@pytest.mark.parametrize(("target", "name", "data"), REGRESSIONS, ids=[f"{t}/{n}" for t, n, _ in REGRESSIONS])
def test_regressions(target: str, name: str, data: bytes) -> None:
    """Inputs that once broke a contract (fuzz/regressions/<target>/<name>) keep to it now."""
    targets.TARGETS[target](data)


# --- signaling messages ---------------------------------------------------------------------------------

FIELDS = ["type", "id", "age_confirmed", "gender", "lang", "client", "resume", "want", "countries"]
FIELDS += ["match_id", "payload", "text", "reason", "comment", "snapshot"]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**65)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "", " ", "m", "any", "DE", "de-AT", "x" * 129, "x" * 1001, "é" * 65])
    | st.binary(max_size=4)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(FIELDS) | st.text(max_size=6) | st.integers(0, 2), inner, max_size=3
        )
    ),
    max_leaves=8,
)


def nested(depth: int, mapping: bool) -> Any:
    """A value `depth` containers deep, around the codecs' limit of 32."""
    value: Any = 0
    for _ in range(depth):
        value = {"k": value} if mapping else [value]
    return value


def mostly(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`strategy` three times in four, any value otherwise."""
    return st.one_of(strategy, strategy, strategy, values)


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"GIF89a"]
ids = st.integers(-(2**64), 2**64) | st.text(max_size=8) | st.sampled_from(["x" * 64, "x" * 65]) | values
match_ids = mostly(st.text(max_size=8))
extra = {"id": ids, "junk": values}
near_valid = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("hello"),
            "age_confirmed": mostly(st.just(True)),
            "gender": mostly(st.sampled_from(sorted(GENDERS))),
        },
        optional={
            **extra,
            "lang": mostly(st.sampled_from(["de-AT", "en", "x" * 36, "zh-Hant-TW", "e1"])),
            "client": mostly(
                st.dictionaries(st.text(max_size=10), scalars, max_size=4)
                | st.dictionaries(st.text(max_size=130), values, max_size=17)
                | st.fixed_dictionaries(
                    {
                        "device_id": mostly(
                            st.sampled_from(["d-1_A", "x" * 64, "x" * 65, "", "d 1", "d\u00e9"])
                        )
                    }
                )
            ),
            "resume": mostly(st.text(max_size=8)),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("search")},
        optional={
            **extra,
            "want": mostly(st.sampled_from(sorted(WANTS))),
            "countries": mostly(st.lists(mostly(st.sampled_from(["DE", "de", "D1", "DEU"])), max_size=65)),
        },
    ),
    st.fixed_dictionaries(
        {"type": st.just("signal"), "match_id": match_ids},
        optional={**extra, "payload": values | st.builds(nested, st.integers(29, 34), st.booleans())},
    ),
    st.fixed_dictionaries(
        {"type": st.just("chat"), "match_id": match_ids},
        optional={
            **extra,
            "text": mostly(st.text(max_size=1002) | st.sampled_from(["  \n", "x" * 1000, "x" * 1001])),
        },
    ),
    st.fixed_dictionaries({"type": st.just("typing"), "match_id": match_ids}, optional=extra),
    st.fixed_dictionaries(
        {"type": st.just("report"), "match_id": match_ids},
        optional={
            **extra,
            "reason": mostly(st.sampled_from(sorted(REPORT_REASONS))),
            "comment": mostly(st.text(max_size=8) | st.sampled_from(["", "x" * 500, "x" * 501])),
            "snapshot": mostly(
                st.sampled_from(["/9j/4A==", "iVBORw0KGgo=", "R0lGODlh", "/9j/4A", "", "\u00e9"])
                | st.builds(lambda magic, rest: magic + rest, st.sampled_from(MAGICS), st.binary(max_size=8))
                | st.binary(max_size=12)
            ),
        },
    ),
    st.fixed_dictionaries({"type": st.sampled_from(["next", "stop", "ping"])}, optional=extra),
    st.fixed_dictionaries(
        {"type": st.sampled_from([*sorted(CLIENT_TYPES), "welcome", "", "HELLO"]) | values},
        optional={**extra, **{field: values for field in FIELDS if field != "type"}},
    ),
)


def frames(raw: dict[str, Any]) -> list[tuple[Codec, bytes]]:
    """`raw` as the frames a client could send: JSON (escaped and raw UTF-8) and msgpack, where it encodes."""
    found = []
    for ensure_ascii in (True, False):
        try:
            text = json.dumps(raw, ensure_ascii=ensure_ascii)  # may write NaN, Infinity, huge integers
        except (TypeError, ValueError, RecursionError):
            break
        found.append((JSON, text.encode("utf-8", "surrogatepass")))
    with contextlib.suppress(TypeError, ValueError, OverflowError, RecursionError):
        found.append((MSGPACK, msgpack.packb(raw, use_bin_type=True)))
    return found


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_any_frame(data: bytes) -> None:
    targets.check_signaling_frame(data)


@settings(max_examples=800)
@given(near_valid)
def test_near_valid_messages(raw: dict[str, Any]) -> None:
    for codec, frame in frames(raw):
        targets.check_frame(codec, frame)


@pytest.mark.parametrize("codec", list(CODECS.values()), ids=lambda codec: codec.subprotocol)
@pytest.mark.parametrize(
    "raw",
    [
        {"type": "hello", "age_confirmed": True, "gender": ["f"]},
        {"type": "hello", "age_confirmed": True, "gender": {"f": 1}},
        {"type": "search", "want": ["any"]},
        {"type": "search", "want": {}},
        {"type": "search", "countries": [["DE"]]},
        {"type": "hello", "age_confirmed": True, "gender": "f", "client": {"a": [1]}},
        {"type": "signal", "match_id": "m", "payload": nested(31, True)},
        {"type": "signal", "match_id": "m", "payload": nested(32, False)},
        {"type": "hello", "age_confirmed": True, "gender": "f", "client": {"a": "x" * 129}},
        {"type": "ping", "id": 2**64 - 1},
        {"type": "ping", "id": "x" * 65},
        {"type": "chat", "match_id": "m", "text": "x" * 1001},
        {"type": "chat", "match_id": "m", "text": " \n"},
        {"type": ["hello"]},
        {"type": "hello", "age_confirmed": True, "gender": "f", "client": {"device_id": ["d"]}},
        {"type": "hello", "age_confirmed": True, "gender": "f", "client": {"device_id": "x" * 65}},
        {"type": "report", "match_id": "m", "reason": ["spam"]},
        {"type": "report", "match_id": "m", "reason": "spam", "comment": {"x": 1}},
        {"type": "report", "match_id": "m", "reason": "spam", "snapshot": ["/9j/4A=="]},
        {"type": "report", "match_id": "m", "reason": "spam", "snapshot": "/9j/" + "A" * 400_000},
    ],
)
def test_known_bad_shapes(codec: Codec, raw: dict[str, Any]) -> None:
    """Values of the wrong kind or size: a list or map where a string belongs once raised TypeError."""
    targets.check_frame(codec, codec.encode(raw))


# --- STUN messages --------------------------------------------------------------------------------------

ATTRIBUTE_TYPES = st.sampled_from([int(kind) for kind in Attr]) | st.sampled_from([0x7777, 0xC057])
ATTRIBUTE_TYPES |= st.integers(0, 0xFFFF)
hosts = st.ip_addresses().map(str)
address_values = (
    st.builds(encode_address, hosts, st.integers(0, 0xFFFF))
    | st.builds(encode_xor_address, hosts, st.integers(0, 0xFFFF), st.binary(min_size=12, max_size=12))
    | st.builds(
        lambda family, port, rest: bytes((0, family)) + port.to_bytes(2, "big") + rest,
        st.sampled_from([0, 1, 2, 3]),
        st.integers(0, 0xFFFF),
        st.binary(max_size=24),
    )
)
attributes = st.lists(
    st.tuples(ATTRIBUTE_TYPES, st.binary(max_size=24) | address_values | st.just(bytes((0, 0, 0, 6)))),
    max_size=6,
).map(tuple)
stun_messages = st.builds(
    Message,
    method=st.just(1) | st.integers(0, 0xFFF),
    message_class=st.sampled_from(list(MessageClass)),
    transaction_id=st.binary(min_size=12, max_size=12),
    attributes=attributes,
    cookie=st.just(MAGIC_COOKIE) | st.integers(0, 2**32 - 1),
)


@st.composite
def encoded_stun(
    draw: st.DrawFn, message: st.SearchStrategy[Message] = stun_messages, intact: int = 2
) -> bytes:
    """A message encoded with random padding, integrity and FINGERPRINT, then damaged in 3 of `intact` + 3."""
    data = encode_message(
        draw(message),
        integrity_key=draw(st.none() | st.just(b"key")),
        integrity_sha256_key=draw(st.none() | st.just(b"key")),
        fingerprint=draw(st.booleans()),
        padding=draw(st.sampled_from([b"\x00", b" ", b"\xff"])),
    )
    damage = draw(st.sampled_from(["none"] * intact + ["flip", "cut", "append"]))
    if damage == "flip":
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes((data[at] ^ draw(st.integers(1, 255)),)) + data[at + 1 :]
    elif damage == "cut":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "append":
        data += draw(st.binary(min_size=1, max_size=8))
    return data


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_any_stun_bytes(data: bytes) -> None:
    targets.check_stun_message(data)


@settings(max_examples=800)
@given(encoded_stun())
def test_near_valid_stun_messages(data: bytes) -> None:
    targets.check_stun_message(data)


# --- STUN responder -------------------------------------------------------------------------------------

prefixes = st.binary(min_size=targets.RESPONDER_PREFIX, max_size=targets.RESPONDER_PREFIX)
requests = encoded_stun(stun_messages) | encoded_stun(
    st.builds(
        Message,
        method=st.just(1),
        message_class=st.just(MessageClass.REQUEST),
        transaction_id=st.binary(min_size=12, max_size=12),
        attributes=st.one_of(
            attributes,
            attributes,
            st.builds(lambda n: ((0x8077, b""),) * n, st.integers(30, 34)),
            st.builds(lambda n: ((Attr.PADDING, bytes(n)),), st.integers(1236, 1264)),
        ),
        cookie=st.just(MAGIC_COOKIE) | st.just(MAGIC_COOKIE) | st.integers(0, 2**32 - 1),
    ),
    intact=12,
)  # Binding requests (a few damaged), and any message


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_any_responder_input(data: bytes) -> None:
    targets.check_responder_input(data)


@settings(max_examples=800)
@given(prefixes, requests)
def test_near_valid_binding_requests(prefix: bytes, request: bytes) -> None:
    targets.check_responder_input(prefix + request)


def test_answers_stay_the_same_when_the_address_cache_is_cleared() -> None:
    """The harness makes a fresh responder per input, so it never fills the bare-request cache: do it here."""
    responder = Responder()
    request = binding_request(bytes(range(12)))
    local = ("192.0.2.1", 3478)
    sources = [(f"10.{n >> 8 & 255}.{n & 255}.1", 40000 + n % 1000) for n in range(_CACHE_LIMIT + 2)]
    first = [responder.respond(request, source, local) for source in sources]
    again = [responder.respond(request, source, local) for source in sources]
    assert first == again == [Responder().respond(request, source, local) for source in sources]


# --- messages between nodes -----------------------------------------------------------------------------

portable_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
foreign_scalars = (
    st.sampled_from([math.nan, math.inf, "\ud800"])
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999))
)
portable_values = st.recursive(
    portable_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
foreign_values = st.recursive(  # holding something no message may, most of the time
    foreign_scalars | portable_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.binary(max_size=2) | st.integers(0, 2), inner, max_size=3)
    ),
    max_leaves=6,
)
cluster_kinds = st.sampled_from(["signal", "chat", "partner_left", "ban", "handover"]) | st.text(
    min_size=1, max_size=4
)


def one_in(n: int, rare: st.SearchStrategy[Any], common: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`rare` once in `n` draws, `common` otherwise (one_of would draw each of its strategies equally often)."""
    return st.integers(1, n).flatmap(lambda roll: rare if roll == 1 else common)


cluster_maps = st.builds(
    lambda kind, rest: {"type": kind, **rest},
    one_in(8, values, cluster_kinds),
    st.dictionaries(
        st.text(max_size=8),
        one_in(5, foreign_values | st.builds(nested, st.integers(60, 66), st.booleans()), portable_values),
        max_size=4,
    ),
)


@st.composite
def packed_cluster_messages(draw: st.DrawFn) -> bytes:
    """A map packed by msgpack (floats in 4 or 8 bytes), sometimes cut short or with a byte flipped or added."""
    raw = draw(one_in(6, values, cluster_maps))
    try:
        data: bytes = msgpack.packb(raw, use_bin_type=True, use_single_float=draw(st.booleans()))
    except (TypeError, ValueError, OverflowError):
        data = draw(st.binary(max_size=40))
    damage = draw(st.sampled_from(["none"] * 5 + ["flip", "cut", "append"]))
    if damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes((data[at] ^ draw(st.integers(1, 255)),)) + data[at + 1 :]
    elif damage == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "append":
        data += draw(st.binary(min_size=1, max_size=4))
    return data


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_any_cluster_bytes(data: bytes) -> None:
    targets.check_cluster_message(data)


@settings(max_examples=800)
@given(packed_cluster_messages())
def test_near_valid_cluster_messages(data: bytes) -> None:
    targets.check_cluster_message(data)


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "x", "deep": nested(63, True)},  # the deepest allowed
        {"type": "x", "deep": nested(64, False)},
        {"type": "x", "big": 2**64 - 1, "small": -(2**63)},
        {"type": "x", "text": "x" * (targets.MAX_MESSAGE_BYTES - 20)},  # near the size limit
    ],
)
def test_cluster_messages_at_the_limits(raw: dict[str, Any]) -> None:
    targets.check_cluster_message(msgpack.packb(raw, use_bin_type=True))


def test_a_message_of_single_floats_may_be_read_and_not_sent_again() -> None:
    """msgpack may write a float in 5 bytes, encode_message writes 9: a message near the limit grows past it."""
    floats = [1.5] * (targets.MAX_MESSAGE_BYTES // 5 - 10)
    data = msgpack.packb({"type": "x", "v": floats}, use_single_float=True)
    targets.check_cluster_message(data)


# --- login cookie ---------------------------------------------------------------------------------------


def damaged(draw: st.DrawFn, data: bytes, intact: int) -> bytes:
    """`data`, or in 3 of `intact` + 3 draws with a byte flipped, cut short or with bytes added."""
    damage = draw(st.sampled_from(["none"] * intact + ["flip", "cut", "append"]))
    if damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes((data[at] ^ draw(st.integers(1, 255)),)) + data[at + 1 :]
    elif damage == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "append":
        data += draw(st.binary(min_size=1, max_size=4))
    return data


account_ids = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
cookie_contents = st.fixed_dictionaries(
    {
        "a": one_in(4, json_values, account_ids | st.sampled_from(["", "a b", "x" * 129, "\u00e9"])),
        "e": one_in(4, json_values, st.integers(int(targets.COOKIE_NOW) - 3, int(targets.COOKIE_NOW) + 3)),
    },
    optional={"x": json_values},
)


@st.composite
def login_cookies(draw: st.DrawFn) -> bytes:
    """A cookie issued (or signed around any JSON) with the target's key or another, then maybe damaged."""
    key = draw(st.sampled_from([targets.COOKIE_KEY] * 3 + [targets.OTHER_COOKIE_KEY]))
    kind = draw(st.sampled_from(["issued", "json", "any"]))
    if kind == "issued":
        value = issue_cookie(
            key,
            draw(account_ids),
            draw(st.floats(targets.COOKIE_NOW - 100, targets.COOKIE_NOW + 100)),
            draw(st.floats(0.001, 200)),
        )
    elif kind == "json":
        content = json.dumps(draw(cookie_contents | json_values)).encode()
        value = targets.signed_json_cookie(content, key)
    else:
        value = targets.signed_cookie(draw(st.text("AQgw-_=.+/", max_size=30)).replace(".", ""), key)
    return damaged(draw, value.encode("ascii"), intact=5)


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_any_login_cookie_bytes(data: bytes) -> None:
    targets.check_login_cookie(data)


@settings(max_examples=300)
@given(login_cookies())
def test_near_valid_login_cookies(data: bytes) -> None:
    targets.check_login_cookie(data)


# --- birth dates ----------------------------------------------------------------------------------------


@st.composite
def written_birth_dates(draw: st.DrawFn) -> bytes:
    """A date written the way a provider writes one (numbers in or out of range, widths right or wrong)."""
    provider = draw(st.sampled_from(targets.PROVIDERS))
    year = draw(one_in(6, st.just(0), st.integers(0, 9999)))
    month = draw(one_in(4, st.integers(0, 13), st.integers(1, 12)))
    day = draw(one_in(4, st.integers(0, 32), st.integers(1, 31)))

    def number(value: int, widths: list[int]) -> str:
        return f"{value:0{draw(st.sampled_from(widths))}d}"

    y, m, d = (
        number(year, [4] * 20 + [1, 3, 5]),
        number(month, [2] * 20 + [1, 3]),
        number(day, [2] * 20 + [1, 3]),
    )
    if provider == "facebook":
        forms = [f"{m}/{d}/{y}", f"{m}/{d}", y]
    elif provider == "vk":
        m, d = number(month, [1, 2] * 10 + [3]), number(day, [1, 2] * 10 + [3])
        forms = [f"{d}.{m}.{y}", f"{d}.{m}", y]
    else:
        forms = [f"{y}-{m}-{d}", f"0000-{m}-{d}", y, f"{y}-{m}"]
    text = draw(st.sampled_from(forms))
    data = bytes((draw(st.sampled_from([targets.PROVIDERS.index(provider)] * 5 + [0, 1, 2, 255])),))
    return data + damaged(draw, text.encode("ascii"), intact=8)


@settings(max_examples=300)
@given(st.binary(max_size=16))
def test_any_birth_date_bytes(data: bytes) -> None:
    targets.check_birth_date(data)


@settings(max_examples=500)
@given(written_birth_dates())
def test_near_valid_birth_dates(data: bytes) -> None:
    targets.check_birth_date(data)


@pytest.mark.parametrize(
    ("provider", "text"),
    [
        ("facebook", "02/29/2000"),
        ("facebook", "02/29/1900"),
        ("vk", "29.2.2100"),
        ("vk", "29.02.2400"),
        ("oidc", "0000-02-29"),
        ("oidc", "0001-01-01"),
        ("oidc", "9981-12-31"),  # the last birth with an 18th birthday datetime can write
        ("oidc", "9982-01-01"),
        ("oidc", "9999-12-31"),
        ("oidc", "9999"),
        ("facebook", "\u0661\u0662/\u0663\u0661/\u0662\u0660\u0660\u0660"),  # Arabic-Indic digits
        ("oidc", "\uff11\uff19\uff19\uff10"),  # full-width digits
    ],
)
def test_birth_dates_at_the_limits(provider: str, text: str) -> None:
    targets.check_birth_date(targets.birth_date_input(provider, text))
