"""Read frames from the device port and persist the learned identity (I/O for `learn`)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from medtls.interception.learn import Identity
from medtls.interception.spec import InterceptionError

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
DEFAULT_STATE = Path("/var/lib/medtls/device.json")


def frames(ifname: str, timeout: float | None) -> Iterator[bytes]:
    """Frames received on `ifname` (not those sent), until `timeout` seconds pass (None: never)."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    except PermissionError:
        raise InterceptionError("learn: needs CAP_NET_RAW to read the device port") from None
    try:
        try:
            sock.bind((ifname, 0))
        except OSError as e:
            raise InterceptionError(f"interfaces.device: {ifname}: {e.strerror}") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            sock.settimeout(left)
            try:
                frame, addr = sock.recvfrom(65535)
            except TimeoutError:
                return
            if addr[2] != PACKET_OUTGOING:
                yield frame
    finally:
        sock.close()


def load_state(path: Path) -> Identity | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InterceptionError(f"{path}: unreadable learned-device state: {e}") from None
    if not isinstance(data, dict) or not {"ip", "mac"} <= data.keys():
        raise InterceptionError(f"{path}: learned-device state lacks ip/mac")
    return Identity(mac=str(data["mac"]), ip=str(data["ip"]))


def save_state(path: Path, identity: Identity, source: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    data = {
        "ip": identity.ip,
        "mac": identity.mac,
        "source": source,
        "learned_at": int(time.time()),
    }
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)
