"""Facebook and VK logins: the pure URL builders and answer readers, then the real redirect flow against
fake providers on loopback ports (tests/provider_servers.py), with ones that refuse, break or are down."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from provider_servers import (
    FakeFacebook,
    FakeProvider,
    FakeVk,
    Running,
    closed_port,
    consent,
    listen,
    listen_silent,
)
from twisted.internet.error import ConnectionDone
from zope.interface.verify import verifyObject

from vchat.accounts import facebook, vk
from vchat.accounts.facebook import FacebookProvider
from vchat.accounts.http import MAX_MESSAGE_CHARS, Answer, provider_message
from vchat.accounts.provider import ILoginProvider, ProviderError, ProviderProfile
from vchat.accounts.vk import Token, VkProvider

APP_ID = "1234567890"
APP_SECRET = "0123456789abcdef0123456789abcdef"
REDIRECT = "https://vchat.example/auth/callback"
STATE = "state-Zq81"
FULL_FACEBOOK = {
    "id": "10158000000000001",
    "email": "ann@example.org",
    "gender": "female",
    "birthday": "04/27/1990",
    "location": {"location": {"country_code": "de"}, "id": "106000000000001"},
}
FULL_VK = {
    "id": 210700286,
    "first_name": "Lindsey",
    "last_name": "Stirling",
    "sex": 2,
    "bdate": "21.9.1986",
    "country": {"id": 1, "title": "Russia"},
}


def answer(body: object, status: int = 200) -> Answer:
    return Answer(status, json.dumps(body).encode())


def query_of(url: str) -> dict[str, str]:
    parts = parse_qs(urlsplit(url).query, keep_blank_values=True)
    assert all(len(values) == 1 for values in parts.values())
    return {key: values[0] for key, values in parts.items()}


# --- pure: URLs ----------------------------------------------------------------------------------------


def test_facebook_urls_carry_the_documented_parameters() -> None:
    url = facebook.authorize_url("https://fb.example/dialog/oauth", APP_ID, REDIRECT, STATE)
    assert url.startswith("https://fb.example/dialog/oauth?")
    assert query_of(url) == {
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "state": STATE,
        "response_type": "code",
        "scope": "email,user_gender,user_birthday,user_location",
    }
    url = facebook.token_url("https://graph.example/v19.0", APP_ID, APP_SECRET, REDIRECT, "c&d=e")
    assert url.startswith("https://graph.example/v19.0/oauth/access_token?")
    assert query_of(url) == {
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "client_secret": APP_SECRET,
        "code": "c&d=e",
    }


def test_facebook_proves_the_app_secret_with_each_graph_call() -> None:
    url = facebook.profile_url("https://graph.example/v19.0", APP_SECRET, "tok+en")
    assert url.startswith("https://graph.example/v19.0/me?")
    proof = hmac.new(APP_SECRET.encode(), b"tok+en", hashlib.sha256).hexdigest()
    assert query_of(url) == {
        "fields": "id,email,gender,birthday,location{location{country_code}}",
        "access_token": "tok+en",
        "appsecret_proof": proof,
    }


def test_vk_urls_carry_the_documented_parameters() -> None:
    url = vk.authorize_url("https://oauth.example", APP_ID, REDIRECT, STATE, "5.131")
    assert url.startswith("https://oauth.example/authorize?")
    assert query_of(url) == {
        "client_id": APP_ID,
        "redirect_uri": REDIRECT,
        "display": "page",
        "scope": "email",
        "response_type": "code",
        "state": STATE,
        "v": "5.131",
    }
    url = vk.token_url("https://oauth.example", APP_ID, APP_SECRET, REDIRECT, "abc")
    assert url.startswith("https://oauth.example/access_token?")
    assert query_of(url) == {
        "client_id": APP_ID,
        "client_secret": APP_SECRET,
        "redirect_uri": REDIRECT,
        "code": "abc",
    }
    url = vk.users_url("https://api.example/method", Token("tok", 42, None), "5.131")
    assert url.startswith("https://api.example/method/users.get?")
    assert query_of(url) == {
        "user_ids": "42",
        "fields": "sex,bdate,country",
        "access_token": "tok",
        "v": "5.131",
    }


# --- pure: Facebook's answers --------------------------------------------------------------------------


def test_facebook_full_profile() -> None:
    assert facebook.read_profile(answer(FULL_FACEBOOK)) == ProviderProfile(
        subject="10158000000000001",
        email="ann@example.org",
        gender="f",
        country="DE",
        birth_date=(1990, 4, 27),
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ProviderProfile("7")),
        ({"gender": "male"}, ProviderProfile("7", gender="m")),
        ({"gender": "non-binary"}, ProviderProfile("7")),
        ({"gender": ["male"]}, ProviderProfile("7")),
        ({"birthday": "1990"}, ProviderProfile("7", birth_date=(1990, 12, 31))),
        ({"birthday": "04/27"}, ProviderProfile("7")),
        ({"birthday": "13/45/1990"}, ProviderProfile("7")),
        ({"birthday": 1990}, ProviderProfile("7")),
        ({"email": "not an address"}, ProviderProfile("7")),
        ({"location": {"location": {"country_code": "DEU"}}}, ProviderProfile("7")),
        ({"location": {"location": {"country": "Germany"}}}, ProviderProfile("7")),
        ({"location": {"name": "Berlin, Germany"}}, ProviderProfile("7")),
        ({"location": "Berlin"}, ProviderProfile("7")),
    ],
)
def test_facebook_fields_missing_or_not_as_documented_are_left_out(
    fields: dict[str, Any], expected: ProviderProfile
) -> None:
    assert facebook.read_profile(answer({"id": "7", **fields})) == expected


def test_facebook_token() -> None:
    body = {"access_token": "EAAB", "token_type": "bearer", "expires_in": 5183944}
    assert facebook.read_token(answer(body)) == "EAAB"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            answer(
                {"error": {"message": "This authorization code has been used.", "type": "OAuthException"}},
                400,
            ),
            "Facebook refused: This authorization code has been used.",
        ),
        (answer({"error": {"type": "OAuthException"}}, 400), "Facebook refused: no reason given"),
        (answer({"token_type": "bearer"}), "Facebook gave no access token"),
        (answer({"access_token": ""}), "Facebook gave no access token"),
        (answer(["EAAB"]), "Facebook gave a malformed answer"),
        (Answer(200, b'{"access_token": '), "Facebook gave a malformed answer"),
        (Answer(200, b"\xff\xfe\x00"), "Facebook gave a malformed answer"),
        (Answer(200, b"[" * 100_000), "Facebook gave a malformed answer"),
        (Answer(500, b"<html>oops</html>"), "Facebook answered HTTP 500"),
        (answer({"access_token": "EAAB"}, 302), "Facebook answered HTTP 302"),
    ],
)
def test_facebook_token_refusals(reply: Answer, message: str) -> None:
    with pytest.raises(ProviderError) as caught:
        facebook.read_token(reply)
    assert str(caught.value) == message


@pytest.mark.parametrize("body", [{}, {"id": ""}, {"id": 7}, {"email": "ann@example.org"}])
def test_facebook_profile_without_an_id_is_refused(body: dict[str, Any]) -> None:
    with pytest.raises(ProviderError, match="Facebook gave no user id"):
        facebook.read_profile(answer(body))


# --- pure: VK's answers --------------------------------------------------------------------------------


def test_vk_token_and_full_user() -> None:
    token = vk.read_token(
        answer({"access_token": "vk1.a", "expires_in": 86400, "user_id": 210700286, "email": "l@example.org"})
    )
    assert token == Token("vk1.a", 210700286, "l@example.org")
    # VK's country is its own id and a title, not an ISO code: left to GeoIP
    assert vk.read_user(answer({"response": [FULL_VK]}), token) == ProviderProfile(
        subject="210700286", email="l@example.org", gender="m", country=None, birth_date=(1986, 9, 21)
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"sex": 1}, ProviderProfile("5", gender="f")),
        ({"sex": 0}, ProviderProfile("5")),
        ({"sex": True}, ProviderProfile("5")),
        ({"sex": [2]}, ProviderProfile("5")),
        ({"bdate": "21.9"}, ProviderProfile("5")),
        ({"bdate": "31.2.1990"}, ProviderProfile("5")),
        ({"bdate": "1.1.2001"}, ProviderProfile("5", birth_date=(2001, 1, 1))),
    ],
)
def test_vk_fields_missing_or_not_as_documented_are_left_out(
    fields: dict[str, Any], expected: ProviderProfile
) -> None:
    assert vk.read_user(answer({"response": [{"id": 5, **fields}]}), Token("t", 5, None)) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"error": "invalid_grant", "error_description": "Code is invalid or expired."},
            "VK refused: Code is",
        ),
        ({"error": "invalid_client"}, "VK refused: invalid_client"),
        ({"access_token": "t"}, "VK gave no access token or user id"),
        ({"access_token": "t", "user_id": "5"}, "VK gave no access token or user id"),
        ({"access_token": "t", "user_id": 0}, "VK gave no access token or user id"),
        ({"user_id": 5}, "VK gave no access token or user id"),
    ],
)
def test_vk_token_refusals(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ProviderError, match=f"^{message}"):
        vk.read_token(answer(body, 401 if "error" in body else 200))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"error": {"error_code": 5, "error_msg": "User authorization failed."}},
            "VK refused: User authorization",
        ),
        ({"response": []}, "VK did not give the user who logged in"),
        ({"response": [{"id": 6}]}, "VK did not give the user who logged in"),
        ({"response": [{"id": "5"}]}, "VK did not give the user who logged in"),
        ({"response": {"id": 5}}, "VK did not give the user who logged in"),
        ({}, "VK did not give the user who logged in"),
    ],
)
def test_vk_user_refusals(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ProviderError, match=f"^{message}"):
        vk.read_user(answer(body), Token("t", 5, None))


def test_vk_email_that_is_no_address_is_dropped() -> None:
    assert vk.read_token(answer({"access_token": "t", "user_id": 5, "email": "a b@c"})).email is None


# --- pure: error messages ------------------------------------------------------------------------------


def test_a_provider_message_is_cleaned_and_truncated() -> None:
    token = "EAABwzLixnjYBO" + "x" * 40
    cleaned = provider_message(f"Malformed access token {token}\n\x00 more")
    assert cleaned == "Malformed access token … more"
    long = provider_message("word " * 100)
    assert len(long) == MAX_MESSAGE_CHARS
    assert long.endswith("…")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
KEYED = st.dictionaries(
    st.sampled_from(["id", "email", "gender", "birthday", "location", "sex", "bdate", "error", "response"]),
    JSON,
)


@given(body=JSON | KEYED, status=st.sampled_from([200, 400, 500]))
def test_any_answer_gives_a_profile_or_a_provider_error(body: object, status: int) -> None:
    def read_user(reply: Answer) -> object:
        return vk.read_user(reply, Token("t", 5, None))

    plain, wrapped = answer(body, status), answer({"response": [body]}, status)
    readers: list[tuple[Callable[[Answer], object], Answer]] = [
        (facebook.read_token, plain),
        (facebook.read_profile, plain),
        (vk.read_token, plain),
        (read_user, plain),
        (read_user, wrapped),
    ]
    for read, reply in readers:
        try:
            read(reply)
        except ProviderError as e:
            assert len(str(e)) < 160


# --- the redirect flow against fake providers ----------------------------------------------------------


@pytest.fixture
def reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest_twisted.async_yield_fixture()
async def fake_facebook(reactor: Any) -> AsyncIterator[tuple[FakeFacebook, Running]]:
    fake = FakeFacebook(APP_ID, APP_SECRET, user=dict(FULL_FACEBOOK))
    running = listen(reactor, fake)
    yield fake, running
    await running.stop()


@pytest_twisted.async_yield_fixture()
async def fake_vk(reactor: Any) -> AsyncIterator[tuple[FakeVk, Running]]:
    fake = FakeVk(APP_ID, APP_SECRET, user=dict(FULL_VK), email="l@example.org")
    running = listen(reactor, fake)
    yield fake, running
    await running.stop()


def facebook_at(reactor: Any, url: str, secret: str = APP_SECRET, timeout: float = 5) -> FacebookProvider:
    return FacebookProvider(
        APP_ID, secret, f"{url}/dialog/oauth", f"{url}/v19.0", timeout=timeout, reactor=reactor
    )


def vk_at(reactor: Any, url: str, secret: str = APP_SECRET, timeout: float = 5) -> VkProvider:
    return VkProvider(APP_ID, secret, url, f"{url}/method", timeout=timeout, reactor=reactor)


async def log_in(reactor: Any, provider: FacebookProvider | VkProvider) -> tuple[str, ProviderProfile]:
    """Through the dialog and back: the code, and the profile `finish` gives for it."""
    url = await provider.authorize_url(REDIRECT, STATE, "nonce-unused", "challenge-unused")
    code = await consent(reactor, url, REDIRECT, STATE)
    return code, await provider.finish(code, REDIRECT, "verifier-unused", "nonce-unused")


async def refusal(reactor: Any, provider: FacebookProvider | VkProvider, fake: FakeProvider) -> str:
    """The ProviderError a login ends in; checked to name no secret, code or token."""
    with pytest.raises(ProviderError) as caught:
        await log_in(reactor, provider)
    message = str(caught.value)
    for secret in (APP_SECRET, *fake.grants, *fake.tokens):
        assert secret not in message
    return message


def test_both_provide_the_interface(reactor: Any) -> None:
    provider: FacebookProvider | VkProvider
    for provider in (facebook_at(reactor, "http://x"), vk_at(reactor, "http://x")):
        assert verifyObject(ILoginProvider, provider)
    assert (FacebookProvider.name, FacebookProvider.label, VkProvider.name, VkProvider.label) == (
        "facebook",
        "Facebook",
        "vk",
        "VK",
    )


@pytest_twisted.ensureDeferred
async def test_facebook_full_profile_through_the_dialog(reactor: Any, fake_facebook: Any) -> None:
    _, running = fake_facebook
    _, profile = await log_in(reactor, facebook_at(reactor, running.url))
    assert profile == ProviderProfile("10158000000000001", "ann@example.org", "f", "DE", (1990, 4, 27))


@pytest_twisted.ensureDeferred
async def test_facebook_without_email_gender_other_birthday_without_year(
    reactor: Any, fake_facebook: Any
) -> None:
    # Facebook gives only a confirmed address, and none when the user has none or declines to share it: an
    # unverified address cannot arrive from it, so "no email" is the only other case.
    fake, running = fake_facebook
    fake.user = {"id": "42", "gender": "custom", "birthday": "04/27"}
    _, profile = await log_in(reactor, facebook_at(reactor, running.url))
    assert profile == ProviderProfile("42")


@pytest_twisted.ensureDeferred
async def test_vk_full_profile_through_the_dialog(reactor: Any, fake_vk: Any) -> None:
    _, running = fake_vk
    _, profile = await log_in(reactor, vk_at(reactor, running.url))
    assert profile == ProviderProfile("210700286", "l@example.org", "m", None, (1986, 9, 21))


@pytest_twisted.ensureDeferred
async def test_vk_without_email_sex_unset_birthday_without_year(reactor: Any, fake_vk: Any) -> None:
    # VK puts `email` in the token answer only for a confirmed address the user granted: an unverified one
    # cannot arrive from it either.
    fake, running = fake_vk
    fake.email = None
    fake.user = {"id": 5, "sex": 0, "bdate": "21.9"}
    _, profile = await log_in(reactor, vk_at(reactor, running.url))
    assert profile == ProviderProfile("5")


@pytest_twisted.ensureDeferred
async def test_a_code_works_once(reactor: Any, fake_facebook: Any, fake_vk: Any) -> None:
    expected = {
        "facebook": "Facebook refused: This authorization code has been used.",
        "vk": "VK refused: Code is invalid or expired.",
    }
    for (_, running), make in ((fake_facebook, facebook_at), (fake_vk, vk_at)):
        provider = make(reactor, running.url)
        code, _ = await log_in(reactor, provider)
        with pytest.raises(ProviderError) as caught:
            await provider.finish(code, REDIRECT, "verifier-unused", "nonce-unused")
        assert str(caught.value) == expected[provider.name]
        assert code not in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_a_wrong_app_secret_is_refused(reactor: Any, fake_facebook: Any, fake_vk: Any) -> None:
    wrong = "f" * 32
    facebook_fake, facebook_running = fake_facebook
    message = await refusal(reactor, facebook_at(reactor, facebook_running.url, wrong), facebook_fake)
    assert message == "Facebook refused: Error validating client secret."
    vk_fake, vk_running = fake_vk
    message = await refusal(reactor, vk_at(reactor, vk_running.url, wrong), vk_fake)
    assert message == "VK refused: client_secret is incorrect"


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("500", "answered HTTP 500"),
        ("malformed", "gave a malformed answer"),
        ("huge", "gave an answer too large"),
        ("stalled", "did not answer within 0.5 s"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_broken_provider(
    reactor: Any, fake_facebook: Any, fake_vk: Any, broken: str, message: str
) -> None:
    for (fake, running), make in ((fake_facebook, facebook_at), (fake_vk, vk_at)):
        fake.broken = broken
        provider = make(reactor, running.url, timeout=0.5)
        assert await refusal(reactor, provider, fake) == f"{provider.label} {message}"
        assert len(fake.stalled) == (broken == "stalled")
        for request in fake.stalled:  # the answer was abandoned: its connection dropped
            with pytest.raises(ConnectionDone):
                await request


@pytest_twisted.ensureDeferred
async def test_a_provider_that_is_down_or_silent_fails_within_the_timeout(reactor: Any) -> None:
    silent = listen_silent(reactor)
    closed = await closed_port(reactor)
    try:
        for url, expected in ((closed, "could not be reached"), (silent.url, "did not answer within 0.5 s")):
            for make in (facebook_at, vk_at):
                provider = make(reactor, url, timeout=0.5)
                started = time.monotonic()
                with pytest.raises(ProviderError) as caught:
                    await provider.finish("a-code", REDIRECT, "verifier-unused", "nonce-unused")
                assert time.monotonic() - started < 2
                assert str(caught.value).startswith(f"{provider.label} {expected}")
                assert "a-code" not in str(caught.value)
    finally:
        await silent.stop()
