"""Countries of client addresses, from a GeoIP database read into memory off the reactor thread."""

from __future__ import annotations

from collections.abc import Callable

import geoip2.database
import geoip2.errors
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from vchat.outcome import Outcome


class ICountryLookup(Interface):
    """Finds the country of an IP address."""

    def country_of(address: str) -> str | None:
        """The ISO 3166 alpha-2 code of `address`'s country, or None when unknown."""


@implementer(ICountryLookup)
class GeoIPCountries:
    """Country lookups in a MaxMind-format database (GeoLite2-Country, DB-IP country lite, ...) held in memory."""

    def __init__(self, reader: geoip2.database.Reader) -> None:
        self._reader = reader

    def country_of(self, address: str) -> str | None:
        try:
            found = self._reader.country(address)
        except (geoip2.errors.AddressNotFoundError, ValueError):
            return None
        return found.country.iso_code or found.registered_country.iso_code

    def close(self) -> None:
        """Release the database."""
        self._reader.close()


def open_country_database(path: str) -> GeoIPCountries:
    """Read a country database into memory (blocking: run it in a thread)."""
    return GeoIPCountries(geoip2.database.Reader(path, mode=geoip2.database.MODE_MEMORY))


@implementer(ICountryLookup)
class GeoIPService(Service):
    """Loads the GeoIP database off the reactor thread when started; until then every country is unknown.

    Stopped, it releases the database (every country unknown); started again, it reads the file again.
    """

    _log = Logger()

    def __init__(self, path: str, reactor: IReactorThreads, on_failure: Callable[[], object]) -> None:
        self.setName("geoip")
        self._path = path
        self._reactor = reactor
        self._on_failure = on_failure
        self._countries: GeoIPCountries | None = None
        self._loaded: Outcome[None] = Outcome()

    def country_of(self, address: str) -> str | None:
        return self._countries.country_of(address) if self._countries is not None else None

    def whenLoaded(self) -> Deferred[None]:
        """Fires once the database is in memory, or fails as reading it failed (since the latest start)."""
        return self._loaded.observe()

    def startService(self) -> None:
        super().startService()
        if self._loaded.settled:  # started again: wait for this reading
            self._loaded = Outcome()
        loading = deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), open_country_database, self._path
        )
        loading.addCallbacks(self._opened, self._failed)

    def _opened(self, countries: GeoIPCountries) -> None:
        if not self.running:
            countries.close()
            return
        if self._countries is not None:  # an earlier start's reading, done after a quick stop and start
            self._countries.close()
        self._countries = countries
        self._log.info("countries from {path}", path=self._path)
        self._loaded.fire(None)

    def _failed(self, failure: Failure) -> None:
        self._log.failure("cannot read the GeoIP database {path}", failure, path=self._path)
        self._on_failure()
        self._loaded.fire(failure)

    def stopService(self) -> None:
        super().stopService()
        countries, self._countries = self._countries, None
        if countries is not None:
            countries.close()


@implementer(ICountryLookup)
class NoCountries:
    """Every country unknown: when no GeoIP database is configured."""

    def country_of(self, address: str) -> str | None:
        return None
