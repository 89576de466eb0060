"""An independent STUN implementation (aioice's codec, as used by aiortc) checks vchat's answers."""

from __future__ import annotations

import pytest
import pytest_twisted
from aioice import stun as aioice_stun
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from vchat.stun.config import StunConfig
from vchat.stun.testing import UdpClient, family_works, start_stun

LOOPBACKS = [
    "127.0.0.1",
    pytest.param(
        "::1", marks=pytest.mark.skipif(not family_works("::1"), reason="this machine has no IPv6 loopback")
    ),
]


@pytest.mark.parametrize("host", LOOPBACKS)
@pytest_twisted.ensureDeferred
async def test_aioice_gets_the_right_mapped_address(host: str) -> None:
    service, listening = await start_stun(reactor, StunConfig(udp_port=0, interfaces=(host,)))
    client = UdpClient(host)
    try:
        [server] = listening.udp
        plain = aioice_stun.Message(
            message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
        )
        plain.add_fingerprint()
        check = aioice_stun.Message(
            message_method=aioice_stun.Method.BINDING, message_class=aioice_stun.Class.REQUEST
        )
        check.attributes["USERNAME"] = "remote:local"
        check.attributes["PRIORITY"] = 1853824767
        check.attributes["ICE-CONTROLLING"] = 0x1234567890ABCDEF
        check.attributes["USE-CANDIDATE"] = None
        check.add_message_integrity(b"remote-ice-password")
        for sent in (plain, check):
            [(payload, source)] = await deferToThread(client.exchange, server, bytes(sent))
            assert source == server
            answer = aioice_stun.parse_message(payload)  # checks FINGERPRINT
            assert answer.message_class == aioice_stun.Class.RESPONSE
            assert answer.transaction_id == sent.transaction_id
            assert answer.attributes["XOR-MAPPED-ADDRESS"] == client.address
            assert "FINGERPRINT" in answer.attributes
    finally:
        client.close()
        await service.stopService()
