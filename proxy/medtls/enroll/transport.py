"""HTTP(S) sessions for the enrollment process, optionally speaking as the device.

In transparent mode the box has no address of its own on the hospital network: it reaches the
ACME server and the CRL distribution points with the device's IP, as its NTP client already does.
Each TCP socket then sets IP_TRANSPARENT and binds (device_ip, 0) before connecting; the owned
ruleset steers replies to the box's local port range (40000-60999) up to the box. In explicit mode
(device_ip None) the sockets are ordinary.

Runs only in the enrollment process (requests is never imported by the serving daemon).
"""

from __future__ import annotations

import socket

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

# Linux value; older Pythons do not export the constant.
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)


class _DeviceAdapter(HTTPAdapter):
    """Every connection of the pool: IP_TRANSPARENT set, then bound to (device_ip, 0), then connect.

    urllib3 applies socket_options before source_address's bind, which is the order the kernel
    needs to accept a non-local source address.
    """

    def __init__(self, device_ip: str | None, **kwargs):
        self._device_ip = device_ip
        super().__init__(**kwargs)

    def init_poolmanager(self, connections, maxsize, block=False, **pool_kwargs):
        if self._device_ip is not None:
            pool_kwargs["socket_options"] = [
                *HTTPConnection.default_socket_options,
                (socket.SOL_IP, IP_TRANSPARENT, 1),
            ]
            pool_kwargs["source_address"] = (self._device_ip, 0)
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        raise requests.exceptions.InvalidURL("medtls enrollment never uses an HTTP proxy")


class _TimeoutSession(requests.Session):
    """A session whose requests default to the configured timeout (connect and read)."""

    def __init__(self, timeout: float):
        super().__init__()
        self._default_timeout = timeout

    def request(self, method, url, **kwargs):
        kwargs.setdefault("timeout", self._default_timeout)
        return super().request(method, url, **kwargs)


def session_as(device_ip: str | None, ca_file: str | None, timeout: float) -> requests.Session:
    """A requests.Session whose TCP connections come from device_ip (transparent) or the box.

    ca_file: the trust anchor for HTTPS (None: the system store). timeout: the default per-request
    timeout in seconds. No proxies from the environment, no .netrc; response size is bounded by the
    caller (stream=True and a capped read).
    """
    session = _TimeoutSession(timeout)
    session.trust_env = False
    session.verify = ca_file if ca_file else True
    adapter = _DeviceAdapter(device_ip, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
