"""Countries: the client's address behind trusted proxies, a real GeoIP database, and country filters end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from maxminddb import InvalidDatabaseError
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from vchat.geo import GeoIPService, ICountryLookup, NoCountries, open_country_database
from vchat.testing import start_server


def write_country_db(path: Path, loopback: str = "DE") -> None:
    """Write a MaxMind-format country database with mmdb-writer, `loopback` the country of 127.0.0.0/8."""
    writer = MMDBWriter(ip_version=6, database_type="GeoLite2-Country", ipv4_compatible=True)
    writer.insert_network(IPSet(["127.0.0.0/8"]), {"country": {"iso_code": loopback}})
    writer.insert_network(IPSet(["203.0.113.0/24"]), {"country": {"iso_code": "FR"}})
    writer.insert_network(IPSet(["2001:db8::/32"]), {"registered_country": {"iso_code": "JP"}})
    writer.to_db_file(str(path))


@pytest.fixture
def country_db(tmp_path: Path) -> str:
    """A MaxMind-format country database, written for the test."""
    path = tmp_path / "countries.mmdb"
    write_country_db(path)
    return str(path)


def test_country_database(country_db: str) -> None:
    countries = open_country_database(country_db)
    verifyObject(ICountryLookup, countries)
    verifyObject(ICountryLookup, NoCountries())
    assert countries.country_of("127.0.0.1") == "DE"
    assert countries.country_of("203.0.113.77") == "FR"
    assert countries.country_of("2001:db8::1") == "JP"
    assert countries.country_of("198.51.100.1") is None
    assert countries.country_of("nonsense") is None
    countries.close()


def test_geoip_service_provides_country_lookup(country_db: str) -> None:
    verifyObject(ICountryLookup, GeoIPService(country_db, reactor, on_failure=lambda: None))


@pytest_twisted.ensureDeferred
async def test_unreadable_database_stops_the_process(tmp_path: Path) -> None:
    failures: list[bool] = []
    (tmp_path / "bad.mmdb").write_bytes(b"not a database")
    service = GeoIPService(str(tmp_path / "bad.mmdb"), reactor, on_failure=lambda: failures.append(True))
    service.startService()
    with pytest.raises(InvalidDatabaseError):
        await service.whenLoaded()
    assert failures == [True] and service.country_of("127.0.0.1") is None
    service.stopService()


@pytest_twisted.ensureDeferred
async def test_started_again_it_reads_the_database_again(country_db: str) -> None:
    service = GeoIPService(country_db, reactor, on_failure=lambda: None)
    service.startService()
    await service.whenLoaded()
    assert service.country_of("127.0.0.1") == "DE"
    service.stopService()
    assert service.country_of("127.0.0.1") is None
    write_country_db(Path(country_db), loopback="AT")  # a new edition
    service.startService()
    await service.whenLoaded()
    assert service.country_of("127.0.0.1") == "AT"
    service.stopService()


@pytest_twisted.ensureDeferred
async def test_countries_and_filters_end_to_end(country_db: str) -> None:
    server = await start_server(reactor, "--geoip-db", country_db, "--trusted-proxy", "127.0.0.1")
    try:
        await server.service.getServiceNamed("geoip").whenLoaded()
        german = await server.client()
        german.send({"type": "hello", "age_confirmed": True, "gender": "m"})
        assert (await german.expect("welcome"))["country"] == "DE"
        french = await server.client(headers={"X-Forwarded-For": "203.0.113.9"})
        french.send({"type": "hello", "age_confirmed": True, "gender": "f"})
        assert (await french.expect("welcome"))["country"] == "FR"
        japanese = await server.client(headers={"X-Forwarded-For": "2001:db8::7"})
        japanese.send({"type": "hello", "age_confirmed": True, "gender": "f"})
        assert (await japanese.expect("welcome"))["country"] == "JP"

        german.send({"type": "search", "countries": ["FR"]})
        await german.expect("searching")
        japanese.send({"type": "search"})
        await japanese.expect("searching")  # the German wants France only: no match
        french.send({"type": "search", "countries": ["de", "at"]})
        await french.expect("searching")
        matched = await french.expect("matched")
        assert matched["partner"] == {"country": "DE", "gender": "m", "lang": None}
        assert (await german.expect("matched"))["partner"]["country"] == "FR"
    finally:
        await server.stop()
