"""Test-wide guards: no network beyond loopback, quiet Ray, offline ultralytics.

CI also runs the suite inside ``unshare -n`` (a network namespace with only loopback),
which covers child processes such as Ray's; this in-process guard makes a stray
download fail loudly on machines where that is not possible.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(OSError):
    """Raised by the test guard for any connection that leaves this machine."""


def _is_local(sock: socket.socket, address) -> bool:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # unix sockets, netlink, ...
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS


def _guarded_connect(self, address):
    if not _is_local(self, address):
        raise NetworkBlocked(f"tests must not use the network: connect to {address!r} blocked")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(self, address):
        raise NetworkBlocked(f"tests must not use the network: connect to {address!r} blocked")
    return _real_connect_ex(self, address)


def pytest_configure(config: pytest.Config) -> None:
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's training tests: steadier timings and results on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
