"""What the store keeps of accounts (docs/accounts.md), as plain checked values: who logged in through which
provider, the account's settings, and its deletion.

Pure Python: no Twisted, no clock. Every value checks itself when built (`ValueError` says what is wrong). An
account keeps only what the service uses: the providers' user ids, a keyed hash of each provider-verified
e-mail (to link accounts; never the e-mail), the gender and country the provider gave, and the settings. A
birth date is never kept: the login is refused under 18 before anything is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from vchat.protocol.messages import MAX_COUNTRIES, WANTS

Provider = Literal["facebook", "vk", "oidc"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
DELETED_REPORTER = "deleted"
"""What a purged account's reports name as their reporter, instead of its id."""
MAX_SUBJECT_CHARS = 128

_SUBJECT = re.compile(r"[!-~]{1,128}")  # printable ASCII, no space: numbers for Facebook and VK, any for OIDC
_EMAIL_HASH = re.compile(r"[0-9a-f]{64}")  # HMAC-SHA256, hex
_LANGUAGE = re.compile(r"[a-z]{2,3}")  # ISO 639-1 or -2/3
_COUNTRY = re.compile(r"[A-Z]{2}")
_PROVIDER_GENDERS = frozenset({"m", "f"})


@dataclass(frozen=True, slots=True, order=True)
class ProviderIdentity:
    """A user as a login provider knows them: the provider, and its id of the user."""

    provider: Provider
    subject: str

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ValueError(f"a provider is one of {', '.join(PROVIDERS)}, not {self.provider!r}")
        if not isinstance(self.subject, str) or not _SUBJECT.fullmatch(self.subject):
            raise ValueError(
                f"a provider's user id is 1 to {MAX_SUBJECT_CHARS} printable ASCII characters, no spaces"
            )


@dataclass(frozen=True, slots=True)
class AccountSettings:
    """What a user chose: interface language, chat translation (its target language, on or off), and the
    default search filters (the gender wanted, the countries accepted: none for any)."""

    lang: str | None = None
    translate_to: str | None = None
    translate: bool = False
    want: str = "any"
    countries: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("lang", "translate_to"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _LANGUAGE.fullmatch(value)):
                raise ValueError(f"{name} is a language code of 2 or 3 lower-case letters, or null")
        if not isinstance(self.translate, bool):
            raise ValueError("translate is true or false")
        if self.want not in WANTS:
            raise ValueError(f"want is one of {', '.join(sorted(WANTS))}")
        countries = self.countries
        if (
            not isinstance(countries, tuple)
            or len(countries) > MAX_COUNTRIES
            or not all(isinstance(code, str) and _COUNTRY.fullmatch(code) for code in countries)
            or list(countries) != sorted(set(countries))
        ):
            raise ValueError(
                f"countries are at most {MAX_COUNTRIES} upper-case ISO 3166 alpha-2 codes, sorted, each once"
            )

    def as_json(self) -> dict[str, Any]:
        """The settings as the APIs and `welcome` show them."""
        return {
            "lang": self.lang,
            "translate_to": self.translate_to,
            "translate": self.translate,
            "want": self.want,
            "countries": list(self.countries),
        }


@dataclass(frozen=True, slots=True)
class Login:
    """A login through a provider, as the store takes it: who (the provider's id of the user), the keyed hash of
    the e-mail the provider verified (None if it gave none, or one it did not verify), the gender and country
    it gave (None if not), and when."""

    identity: ProviderIdentity
    email_hash: str | None
    gender: str | None
    country: str | None
    at: float

    def __post_init__(self) -> None:
        if not isinstance(self.identity, ProviderIdentity):
            raise ValueError("a login names a ProviderIdentity")
        if self.email_hash is not None:
            _check_email_hash(self.email_hash)
        _check_profile(self.gender, self.country)
        _check_time("a login's time", self.at)


@dataclass(frozen=True, slots=True)
class Account:
    """A stored account: its id (the `user_id` bans and reports name), the providers linked to it, the gender
    and country its providers gave, its settings, whether an e-mail hash links it, and its life: created, last
    logged in, deleted (inaccessible from then) and due to be purged."""

    account_id: str
    identities: tuple[ProviderIdentity, ...]
    gender: str | None
    country: str | None
    settings: AccountSettings = field(default_factory=AccountSettings)
    has_email: bool = False
    created_at: float = 0.0
    last_login_at: float = 0.0
    deleted_at: float | None = None
    purge_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.account_id, str) or not _SUBJECT.fullmatch(self.account_id):
            raise ValueError("an account id is 1 to 128 printable ASCII characters, no spaces")
        if list(self.identities) != sorted(set(self.identities)):
            raise ValueError("an account's identities are sorted, each once")
        _check_profile(self.gender, self.country)
        for name in ("created_at", "last_login_at"):
            _check_time(f"an account's {name}", getattr(self, name))
        for name in ("deleted_at", "purge_at"):
            if getattr(self, name) is not None:
                _check_time(f"an account's {name}", getattr(self, name))

    @property
    def deleted(self) -> bool:
        """Whether the user asked for its deletion: it can no longer be used."""
        return self.deleted_at is not None


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """An account with the e-mail hashes that link to it, which `Account` only counts: what a migration moves
    from one store to another (`vchat.store.migrate`)."""

    account: Account
    email_hashes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.account, Account):
            raise ValueError("a stored account holds an Account")
        hashes = self.email_hashes
        if not isinstance(hashes, tuple) or list(hashes) != sorted(set(hashes)):
            raise ValueError("an account's e-mail hashes are sorted, each once")
        for hashed in hashes:
            _check_email_hash(hashed)
        if self.account.has_email != bool(hashes):
            raise ValueError("an account has an e-mail if, and only if, an e-mail hash links to it")


def _check_email_hash(value: object) -> None:
    if not isinstance(value, str) or not _EMAIL_HASH.fullmatch(value):
        raise ValueError("an e-mail hash is 64 lower-case hex digits (HMAC-SHA256)")


def _check_profile(gender: object, country: object) -> None:
    if gender is not None and gender not in _PROVIDER_GENDERS:
        raise ValueError("a provider's gender is m, f or null")
    if country is not None and (not isinstance(country, str) or not _COUNTRY.fullmatch(country)):
        raise ValueError("a country is an upper-case ISO 3166 alpha-2 code, or null")


def _check_time(what: str, value: object) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != value
        or value
        in (
            float("inf"),
            float("-inf"),
        )
    ):
        raise ValueError(f"{what} is a finite number of seconds")
