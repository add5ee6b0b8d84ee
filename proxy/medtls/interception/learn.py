"""Recognise the device from its own frames on the device port (sans-io).

`parse_frame(frame)` extracts the sender's MAC and IPv4 address from ARP, DHCP and IPv4 frames;
`Learner.feed(observation)` turns observations into events: the first identity is learned,
a different MAC or IP afterwards is a change that is reported, never adopted.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True)
class Observation:
    mac: str
    ip: str | None
    source: str  # arp | dhcp | ipv4 | frame


@dataclass(frozen=True)
class Identity:
    mac: str
    ip: str

    def __str__(self) -> str:
        return f"{self.ip} ({self.mac})"


@dataclass(frozen=True)
class Learned:
    identity: Identity
    source: str


@dataclass(frozen=True)
class Changed:
    expected: Identity
    seen: Observation

    def __str__(self) -> str:
        got = f"{self.seen.ip or '?'} ({self.seen.mac})"
        return f"device changed: expected {self.expected}, saw {got} via {self.seen.source}"


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def _usable_ip(raw: bytes) -> str | None:
    ip = ipaddress.IPv4Address(raw)
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip == _BROADCAST:
        return None
    return str(ip)


def _dhcp_ip(payload: bytes) -> str | None:
    """ciaddr, else option 50 (requested address) of a client message."""
    if len(payload) < 240 or payload[0] != 1 or payload[236:240] != b"\x63\x82\x53\x63":
        return None
    ciaddr = _usable_ip(payload[12:16])
    if ciaddr:
        return ciaddr
    i = 240
    while i < len(payload):
        code = payload[i]
        if code == 0:
            i += 1
            continue
        if code == 255 or i + 1 >= len(payload):
            break
        length = payload[i + 1]
        if code == 50 and length == 4 and i + 6 <= len(payload):
            return _usable_ip(payload[i + 2 : i + 6])
        i += 2 + length
    return None


def parse_frame(frame: bytes) -> Observation | None:
    """What a frame received on the device port tells about its sender (None: nothing)."""
    if len(frame) < 14:
        return None
    src = frame[6:12]
    if src[0] & 1 or src == b"\x00" * 6:
        return None
    mac = _mac(src)
    (etype,) = struct.unpack("!H", frame[12:14])
    off = 14
    while etype in (ETH_P_8021Q, ETH_P_8021AD) and len(frame) >= off + 4:
        (etype,) = struct.unpack("!H", frame[off + 2 : off + 4])
        off += 4
    body = frame[off:]
    if etype == ETH_P_ARP and len(body) >= 28 and body[0:6] == b"\x00\x01\x08\x00\x06\x04":
        return Observation(mac, _usable_ip(body[14:18]), "arp")
    if etype == ETH_P_IP and len(body) >= 20 and body[0] >> 4 == 4:
        ihl = (body[0] & 0x0F) * 4
        src_ip = _usable_ip(body[12:16])
        if body[9] == 17 and len(body) >= ihl + 8:
            sport, dport = struct.unpack("!HH", body[ihl : ihl + 4])
            if sport == 68 and dport == 67:
                return Observation(mac, _dhcp_ip(body[ihl + 8 :]) or src_ip, "dhcp")
        return Observation(mac, src_ip, "ipv4")
    return Observation(mac, None, "frame")


class Learner:
    """Feed observations; returns a Learned event once, then Changed events for differences."""

    def __init__(self, expected: Identity | None = None, expected_mac: str | None = None):
        self.identity = expected
        self.expected_mac = expected_mac.lower() if expected_mac else None
        self._reported: set[tuple[str, str | None]] = set()

    def feed(self, obs: Observation) -> Learned | Changed | None:
        if self.identity is None:
            if self.expected_mac and obs.mac != self.expected_mac:
                return self._change(Identity(self.expected_mac, "?"), obs)
            if obs.ip is None:
                return None
            self.identity = Identity(obs.mac, obs.ip)
            return Learned(self.identity, obs.source)
        if obs.mac != self.identity.mac or (obs.ip is not None and obs.ip != self.identity.ip):
            return self._change(self.identity, obs)
        return None

    def _change(self, expected: Identity, obs: Observation) -> Changed | None:
        key = (obs.mac, obs.ip)
        if key in self._reported:
            return None
        self._reported.add(key)
        return Changed(expected, obs)
