"""The host's own IP addresses, from libc's getifaddrs(3) through ctypes (Python has no portable getifaddrs).

A STUN reply must leave from the address its request was sent to, so the UDP listener binds each address
separately rather than the wildcard. This is read once, when the listener starts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import socket
import sys

_IFF_UP = 0x1


class _SockAddr(ctypes.Structure):
    # Linux: 16-bit family first; the BSDs and macOS: 8-bit length then 8-bit family.
    _fields_ = [("sa_family", ctypes.c_uint16), ("sa_data", ctypes.c_uint8 * 14)]


class _IfAddrs(ctypes.Structure):
    pass


_IfAddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_IfAddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.POINTER(_SockAddr)),
    ("ifa_netmask", ctypes.POINTER(_SockAddr)),
    ("ifa_ifu", ctypes.POINTER(_SockAddr)),
    ("ifa_data", ctypes.c_void_p),
]


def _family(address: _SockAddr) -> int:
    if sys.platform.startswith("linux"):
        return int(address.sa_family)
    value = int(address.sa_family)
    return value & 0xFF if sys.byteorder == "big" else value >> 8


def host_addresses() -> list[str] | None:
    """The IPv4 and IPv6 addresses of the host's interfaces that are up, or None if they cannot be read.

    IPv6 link-local addresses are left out: they need a scope, and nobody configures one as a STUN server.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        getifaddrs = libc.getifaddrs
        freeifaddrs = libc.freeifaddrs
    except (OSError, AttributeError, TypeError):
        return None
    head = ctypes.POINTER(_IfAddrs)()
    if getifaddrs(ctypes.byref(head)) != 0:
        return None
    found: list[str] = []
    try:
        entry = head
        while entry:
            item = entry.contents
            entry = item.ifa_next
            if not item.ifa_addr or not item.ifa_flags & _IFF_UP:
                continue
            family = _family(item.ifa_addr.contents)
            raw = ctypes.string_at(item.ifa_addr, 28 if family == socket.AF_INET6 else 16)
            if family == socket.AF_INET:
                ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(raw[4:8])
            elif family == socket.AF_INET6:
                ip = ipaddress.IPv6Address(raw[8:24])
                if ip.is_link_local:
                    continue
            else:
                continue
            text = str(ip)
            if text not in found:
                found.append(text)
    finally:
        freeifaddrs(head)
    return found
