"""`--ws ssl:...`: the signaling endpoint over TLS, with a certificate made for the test."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS

from vchat.protocol.codec import JSON_SUBPROTOCOL
from vchat.tap import Options
from vchat.testing import SignalingClient, admin_request, connect, self_signed, start_server


async def connect_tls(port: int, trusted: Path) -> SignalingClient:
    """Open a wss:// WebSocket to 127.0.0.1:`port`, trusting only the certificate in `trusted`."""
    tls = optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(trusted.read_bytes()))
    return await connect(reactor, f"wss://127.0.0.1:{port}/ws", [JSON_SUBPROTOCOL], tls=tls)


def test_last_ws_wins(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    ssl = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    options = Options()
    options.parseOptions(["--ws", "tcp:0:interface=127.0.0.1", "--ws", ssl])
    assert options["ws"] == ssl


# Twisted's ssl: endpoint still hands pyOpenSSL its own key and certificate objects, which pyOpenSSL 26 deprecates.
@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_hello_over_tls(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    server = await start_server(reactor, "--ws", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    try:
        listening = await server.service.getServiceNamed("signaling").whenListening()
        client = await connect_tls(listening.getHost().port, cert)
        served = Certificate.peerFromTransport(client.transport)
        assert served.digest() == Certificate.loadPEM(cert.read_bytes()).digest()
        client.send({"type": "hello", "age_confirmed": True, "gender": "u"})
        await client.expect("welcome")
        client.sendClose()
        await client.wait_closed()
    finally:
        await server.stop()


@pytest.mark.filterwarnings("ignore:Passing pyOpenSSL (X509|PKey) objects is deprecated:DeprecationWarning")
@pytest_twisted.ensureDeferred
async def test_the_admin_api_over_https(tmp_path: Path) -> None:
    key, cert = self_signed(tmp_path)
    server = await start_server(
        reactor, "--admin", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    )
    try:
        assert server.admin_url is not None and server.admin_url.startswith("https://127.0.0.1:")
        trusted = BrowserLikePolicyForHTTPS(trustRoot=Certificate.loadPEM(cert.read_bytes()))
        agent = Agent(reactor, contextFactory=trusted)
        response = await admin_request(server, "GET", "/api/stats", agent=agent)
        assert response.status == 200 and response.json()["sessions"]["online"] == 0
        refused = await admin_request(server, "GET", "/api/stats", token=None, agent=agent)
        assert refused.status == 401
    finally:
        await server.stop()
