"""Which network interface gloo should bind to, so that ranks on other machines can reach this one."""

from __future__ import annotations

import fcntl
import socket
import struct

_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address


def interface_with_address(address: str) -> str | None:
    """The name of this machine's interface that holds the IPv4 ``address``, if one does."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            try:
                request = struct.pack("256s", name.encode()[:15])
                held = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)[20:24])
            except OSError:  # no IPv4 address on this interface
                continue
            if held == address:
                return name
    return None


def interface_toward(host: str) -> str | None:
    """The interface whose address this machine would use to reach ``host`` (node 0's rendezvous address).

    A UDP ``connect`` only asks the routing table; no packet is sent. None when ``host`` is not an
    IPv4 address this machine can route to.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((socket.gethostbyname(host), 9))
            source = probe.getsockname()[0]
    except OSError:
        return None
    return interface_with_address(source)
