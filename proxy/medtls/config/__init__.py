"""Load and validate the medtls YAML configuration into frozen dataclasses.

`load_config(path)` returns a `Config` or raises `ConfigError`, whose `problems` list names every
wrong key with its path (``outbound[1].verify.ca: file not found: /x``). Unknown keys are errors.
Relative file paths are resolved against the directory of the configuration file.

The same `Config` is consumed by the proxy daemon and by the nftables rules generator
(`medtls.interception`), so it only describes intent; it opens no sockets and reads no keys.
"""

from __future__ import annotations

import ipaddress
import os
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml  # (no `typing`: 0.5 MiB in each serving process, docs/performance.md item 43)

from medtls.config.ops import OPS_SECTIONS, OpsConfig, parse_ops_sections
from medtls.config.profiles import LEGACY_PROFILES, PROFILES

DEFAULT_PROFILE = "bcp195"
# TLS session tickets: how long a peer may resume without a full handshake (0: never, the
# default: a ticket costs every full handshake ≈ 0.1 ms, wasted on peers that never resume;
# docs/performance.md item 62).
DEFAULT_SESSION_LIFETIME = 0
MAX_SESSION_LIFETIME = 604800
MODES = ("transparent", "explicit")
CRL_CHECKS = ("leaf", "chain")
INTERCEPTIONS = ("tproxy", "dnat")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Problem:
    """One configuration error: `path` is a key path such as ``outbound[0].verify.ca``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every error found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Device:
    """The protected device. `ip` is None when configured as ``auto`` (learned at run time)."""

    ip: str | None
    mac: str | None = None
    # The device's subnet length and its router: the box's own traffic as the device to
    # destinations outside ip/prefix goes via `gateway` (None: every peer is on-link).
    prefix: int | None = None
    gateway: str | None = None


@dataclass(frozen=True)
class Interfaces:
    """Network interfaces of the box (used by the interception rules)."""

    device: str = "eth0"
    lan: str = "eth1"
    bridge: str = "br0"


@dataclass(frozen=True)
class Listeners:
    """Local ports that intercepted flows are delivered to in transparent mode."""

    outbound: int = 15001
    inbound: int = 15002
    address: str = "0.0.0.0"


@dataclass(frozen=True)
class Identity:
    """Certificate chain (leaf first) and key the box presents for the device."""

    certificate: Path
    key: Path
    key_passphrase_file: Path | None = None
    # The CA bundle our own certificate chains to, when its issuer is not the peers' CA
    # (trust.ca): the chain we send is built from it and our identity is validated against it.
    ca: Path | None = None


@dataclass(frozen=True)
class Verify:
    """Expected identity of an outbound peer's certificate; every given field must match."""

    ip: str | None = None
    dns: str | None = None
    cn: str | None = None
    subject: str | None = None
    spki_sha256: str | None = None
    ca: Path | None = None


@dataclass(frozen=True)
class Endpoint:
    """A ``HOST:PORT`` pair (explicit-mode listen address)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class OutboundPeer:
    """A LAN peer the device may dial: original destination `address`:`port` -> TLS `tls_port`."""

    name: str
    address: str
    port: int | None
    tls_port: int
    sni: str | None = None
    verify: Verify | None = None
    plaintext: bool = False
    profile: str | None = None
    listen: Endpoint | None = None


@dataclass(frozen=True)
class AllowRule:
    """One admitted client identity; all given fields must match (ip = peer source address)."""

    cn: str | None = None
    dns: str | None = None
    uri: str | None = None
    ip_san: str | None = None
    subject: str | None = None
    spki_sha256: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class InboundPort:
    """A TLS port on the device's IP: verified LAN clients are relayed to `device_port` in plain."""

    name: str
    port: int
    device_port: int
    allow: tuple[AllowRule, ...]
    ca: Path | None = None
    profile: str | None = None
    listen: Endpoint | None = None


@dataclass(frozen=True)
class Passthrough:
    """Plaintext LAN -> device ports let through by the interception rules (off by default)."""

    inbound_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Ntp:
    """NTP servers on the LAN the box's own clock synchronises with, as the device (IPv4)."""

    servers: tuple[str, ...] = ()


NTP_MAX_SERVERS = 8


@dataclass(frozen=True)
class Limits:
    """Resource limits and timeouts (seconds; 0 disables idle_timeout)."""

    max_connections: int = 1024
    max_handshakes: int = 256
    max_handshakes_per_source: int = 16
    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    idle_timeout: float = 0.0
    buffer_size: int = 262144
    drain_timeout: float = 30.0
    keepalive: bool = True


@dataclass(frozen=True)
class Logging:
    level: str = "info"


@dataclass(frozen=True)
class Config:
    """A validated medtls configuration."""

    path: Path
    device: Device
    identity: Identity
    trust_ca: Path
    trust_crl: Path | None = None  # PEM CRLs; peers of a CA without a valid CRL in it fail
    crl_check: str = "leaf"  # leaf: the peer certificate; chain: every CA certificate too
    mode: str = "transparent"
    interception: str = "tproxy"
    interfaces: Interfaces = field(default_factory=Interfaces)
    listeners: Listeners = field(default_factory=Listeners)
    profile: str = DEFAULT_PROFILE
    outbound: tuple[OutboundPeer, ...] = ()
    inbound: tuple[InboundPort, ...] = ()
    passthrough: Passthrough = field(default_factory=Passthrough)
    ntp: Ntp = field(default_factory=Ntp)
    limits: Limits = field(default_factory=Limits)
    logging: Logging = field(default_factory=Logging)
    workers: int = 1
    session_lifetime: int = DEFAULT_SESSION_LIFETIME
    ops: OpsConfig = field(default_factory=OpsConfig)

    def outbound_profile(self, peer: OutboundPeer) -> str:
        return peer.profile or self.profile

    def inbound_profile(self, port: InboundPort) -> str:
        return port.profile or self.profile

    def warnings(self) -> list[str]:
        """Operator-visible warnings for opt-in weakenings (legacy profiles, plaintext)."""
        out = []
        if self.profile in LEGACY_PROFILES:
            out.append(f"tls.profile: legacy profile {self.profile!r} is in use")
        for i, p in enumerate(self.outbound):
            if p.plaintext:
                out.append(
                    f"outbound[{i}] ({p.name}): plaintext pass-through to {p.address}:{p.port}"
                )
            elif p.profile in LEGACY_PROFILES:
                out.append(f"outbound[{i}] ({p.name}): legacy profile {p.profile!r}")
        for i, p in enumerate(self.inbound):
            if p.profile in LEGACY_PROFILES:
                out.append(f"inbound[{i}] ({p.name}): legacy profile {p.profile!r}")
        if self.passthrough.inbound_ports:
            ports = ", ".join(map(str, self.passthrough.inbound_ports))
            out.append(f"passthrough.inbound_ports: plaintext LAN -> device on {ports}")
        return out


# --------------------------------------------------------------------------- parsing


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"a {_kind(key)} cannot be a key", mark
            ) from None
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_show(key)}", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_MISSING = object()


class _Reader:
    """Walks the raw YAML and collects problems instead of stopping at the first one."""

    def __init__(self, base_dir: Path, check_files: bool):
        self.problems: list[Problem] = []
        self.base_dir = base_dir
        self.check_files = check_files

    def err(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def mapping(self, raw: object, path: str, allowed: set[str], required: set[str] = frozenset()):
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.err(path, f"must be a mapping, got {_kind(raw)}")
            return None
        for k in raw:
            if k not in allowed:
                where = f"{path}.{k}" if path else str(k)
                self.err(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for k in sorted(required):
            if k not in raw:
                self.err(f"{path}.{k}" if path else k, "required key missing")
        return raw

    def get(self, raw: dict, key: str, path: str, conv: Callable, default: object = _MISSING):
        where = f"{path}.{key}" if path else key
        if key not in raw or raw[key] is None:
            return None if default is _MISSING else default
        try:
            return conv(raw[key])
        except _Invalid as e:
            self.err(where, str(e))
            return None if default is _MISSING else default

    def file(self, value: object) -> Path:
        s = _str(value)
        p = Path(s)
        if not p.is_absolute():
            p = self.base_dir / p
        if self.check_files:
            if not p.exists():
                raise _Invalid(f"file not found: {p}")
            if not p.is_file():
                raise _Invalid(f"not a regular file: {p}")
            if not os.access(p, os.R_OK):
                raise _Invalid(f"file not readable: {p}")
        return p


class _Invalid(Exception):
    pass


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 60, 60, 4, 4


def _show(v: object) -> str:
    """A value for an error message, bounded: YAML aliases can make a small file a huge value."""
    return _REPR.repr(v)


def _kind(v: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), type(v).__name__
    )


def _str(v: object) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Invalid(f"must be a non-empty string, got {_kind(v)} {_show(v)}")
    return v.strip()


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"must be true or false, got {_show(v)}")
    return v


def _port(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        raise _Invalid(f"must be a port number 1-65535, got {_show(v)}")
    return v


def _pos_int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _Invalid(f"must be a positive integer, got {_show(v)}")
    return v


def _seconds(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise _Invalid(f"must be a number of seconds >= 0, got {_show(v)}")
    return float(v)


def _session_lifetime(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SESSION_LIFETIME:
        raise _Invalid(
            f"must be whole seconds from 0 (no resumption) to {MAX_SESSION_LIFETIME} "
            f"(7 days, RFC 8446), got {_show(v)}"
        )
    return v


def _ip(v: object) -> str:
    try:
        return str(ipaddress.ip_address(_str(v) if not isinstance(v, int) else v))
    except ValueError:
        raise _Invalid(f"not an IP address: {_show(v)}") from None


def _choice(options: tuple[str, ...]) -> Callable[[object], str]:
    def conv(v: object) -> str:
        if v not in options:
            raise _Invalid(f"must be one of {', '.join(options)}, got {_show(v)}")
        return v

    return conv


def _profile(v: object) -> str:
    if not isinstance(v, str) or v not in PROFILES:
        raise _Invalid(f"unknown TLS profile {_show(v)} (known: {', '.join(PROFILES)})")
    return v


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _mac(v: object) -> str:
    s = _str(v).lower()
    if not _MAC.match(s):
        raise _Invalid(f"not a MAC address (aa:bb:cc:dd:ee:ff): {_show(v)}")
    return s


def _spki(v: object) -> str:
    s = _str(v).lower().replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", s):
        raise _Invalid("must be 64 hex digits (SHA-256 of the DER SubjectPublicKeyInfo)")
    return s


def _subject(v: object) -> str:
    s = _str(v)
    if parse_dn(s) is None:
        raise _Invalid(f"not a distinguished name like 'CN=pacs,O=Hospital': {_show(v)}")
    return s


def parse_dn(text: str) -> tuple[tuple[str, str], ...] | None:
    """Parse ``CN=x,O=y`` into sorted (TYPE, value) pairs; None if malformed."""
    parts = re.split(r"(?<!\\),", text)
    out = []
    for part in parts:
        if "=" not in part:
            return None
        k, _, v = part.partition("=")
        k, v = k.strip().upper(), v.strip().replace("\\,", ",")
        if not k or not v:
            return None
        out.append((k, v))
    return tuple(sorted(out))


def _endpoint(v: object) -> Endpoint:
    s = _str(v)
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)", s)
    if not m:
        raise _Invalid(f"must be HOST:PORT (e.g. 127.0.0.1:11112), got {_show(v)}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if host != "localhost":
            raise _Invalid(f"listen host must be an IP address, got {_show(host)}") from None
        host = "127.0.0.1"
    _port(port)
    return Endpoint(host, port)


# --------------------------------------------------------------------------- sections


def _prefix_len(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 31:
        raise _Invalid(f"must be the device's IPv4 prefix length 1-31 (e.g. 24), got {_show(v)}")
    return v


def _ipv4(v: object) -> str:
    try:
        addr = ipaddress.IPv4Address(_str(v))
    except (ValueError, _Invalid):
        raise _Invalid(f"not an IPv4 address: {_show(v)}") from None
    if addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_reserved:
        raise _Invalid(f"{addr}: not a unicast address of a router")
    return str(addr)


def gateway_problem(device_ip: str, prefix: int, gateway: str) -> str | None:
    """Why `gateway` cannot be the router of `device_ip`/`prefix` (None: it can). Also used by
    the rules generator for a learned `device.ip: auto`."""
    ip = ipaddress.ip_address(device_ip)
    if ip.version != 4:
        return f"device.ip {ip} is not IPv4 (device.gateway is IPv4 only)"
    net = ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False)
    gw = ipaddress.IPv4Address(gateway)
    if gw not in net:
        return f"{gw} is outside the device's subnet {net} (device {ip}/{prefix})"
    if gw == ip:
        return f"{gw} is the device's own address"
    if prefix <= 30 and gw in (net.network_address, net.broadcast_address):
        which = "network" if gw == net.network_address else "broadcast"
        return f"{gw} is the {which} address of {net}"
    return None


def _device(r: _Reader, raw: object) -> Device:
    d = r.mapping(raw, "device", {"ip", "mac", "prefix", "gateway"}, {"ip"}) or {}
    ip = r.get(d, "ip", "device", lambda v: None if v == "auto" else _ip(v))
    mac = r.get(d, "mac", "device", _mac)
    prefix = r.get(d, "prefix", "device", _prefix_len)
    gateway = r.get(d, "gateway", "device", _ipv4)
    has_prefix, has_gateway = d.get("prefix") is not None, d.get("gateway") is not None
    if has_gateway and not has_prefix:
        r.err("device.prefix", "required with device.gateway (the device's subnet length, e.g. 24)")
    elif has_prefix and not has_gateway:
        r.err("device.gateway", "required with device.prefix (the device's router on its subnet)")
    elif ip is not None and prefix is not None and gateway is not None:
        problem = gateway_problem(ip, prefix, gateway)
        if problem:
            r.err("device.gateway", problem)
    return Device(ip=ip, mac=mac, prefix=prefix, gateway=gateway)


def _interfaces(r: _Reader, raw: object) -> Interfaces:
    d = r.mapping(raw, "interfaces", {"device", "lan", "bridge"}) or {}
    return Interfaces(
        device=r.get(d, "device", "interfaces", _str, "eth0"),
        lan=r.get(d, "lan", "interfaces", _str, "eth1"),
        bridge=r.get(d, "bridge", "interfaces", _str, "br0"),
    )


def _listeners(r: _Reader, raw: object) -> Listeners:
    d = r.mapping(raw, "listeners", {"outbound", "inbound", "address"}) or {}
    lis = Listeners(
        outbound=r.get(d, "outbound", "listeners", _port, 15001),
        inbound=r.get(d, "inbound", "listeners", _port, 15002),
        address=r.get(d, "address", "listeners", _ip, "0.0.0.0"),
    )
    if lis.outbound == lis.inbound:
        r.err("listeners.inbound", f"same port as listeners.outbound ({lis.inbound})")
    return lis


def _identity(r: _Reader, raw: object) -> Identity | None:
    d = r.mapping(
        raw,
        "identity",
        {"certificate", "key", "key_passphrase_file", "ca"},
        {
            "certificate",
            "key",
        },
    )
    if d is None:
        return None
    return Identity(
        certificate=r.get(d, "certificate", "identity", r.file),
        key=r.get(d, "key", "identity", r.file),
        key_passphrase_file=r.get(d, "key_passphrase_file", "identity", r.file),
        ca=r.get(d, "ca", "identity", r.file),
    )


_VERIFY_IDS = ("ip", "dns", "cn", "subject", "spki_sha256")


def _verify(r: _Reader, raw: object, path: str) -> Verify | None:
    d = r.mapping(raw, path, {*_VERIFY_IDS, "ca"})
    if d is None:
        return None
    v = Verify(
        ip=r.get(d, "ip", path, _ip),
        dns=r.get(d, "dns", path, lambda x: _str(x).lower()),
        cn=r.get(d, "cn", path, _str),
        subject=r.get(d, "subject", path, _subject),
        spki_sha256=r.get(d, "spki_sha256", path, _spki),
        ca=r.get(d, "ca", path, r.file),
    )
    if not any(k in d for k in _VERIFY_IDS):
        r.err(path, f"at least one of {', '.join(_VERIFY_IDS)} is required")
    return v


_OUT_KEYS = {"name", "address", "port", "tls_port", "sni", "verify", "plaintext", "profile",
             "listen"}  # fmt: skip


def _outbound(r: _Reader, raw: object, mode: str) -> tuple[OutboundPeer, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.err("outbound", f"must be a list, got {_kind(raw)}")
        return ()
    peers = []
    names: dict[str, str] = {}
    dests: dict[tuple[str, int], str] = {}
    for i, item in enumerate(raw):
        path = f"outbound[{i}]"
        req = {"name", "address"} | ({"listen"} if mode == "explicit" else {"port"})
        d = r.mapping(item, path, _OUT_KEYS, req)
        if d is None:
            continue
        name = r.get(d, "name", path, _str)
        address = r.get(d, "address", path, _ip)
        port = r.get(d, "port", path, _port)
        tls_port = r.get(d, "tls_port", path, _port)
        plaintext = r.get(d, "plaintext", path, _bool, False)
        listen = r.get(d, "listen", path, _endpoint)
        if listen and mode != "explicit":
            r.err(f"{path}.listen", "only valid with mode: explicit")
        if tls_port is None:
            tls_port = port
        if tls_port is None and "tls_port" not in d and "port" not in d:
            r.err(f"{path}.port", "required key missing (or give tls_port)")
        verify = None
        if "verify" in d:
            verify = _verify(r, d["verify"], f"{path}.verify")
            if plaintext:
                r.err(f"{path}.verify", "not allowed with plaintext: true")
        elif not plaintext:
            r.err(f"{path}.verify", "required key missing (or set plaintext: true)")
        if plaintext:
            for k in ("sni", "profile"):
                if k in d:
                    r.err(f"{path}.{k}", "not allowed with plaintext: true")
        peer = OutboundPeer(
            name=name or f"outbound{i}",
            address=address or "",
            port=port,
            tls_port=tls_port or 0,
            sni=r.get(d, "sni", path, _str),
            verify=verify,
            plaintext=plaintext,
            profile=r.get(d, "profile", path, _profile),
            listen=listen,
        )
        if name:
            if name in names:
                r.err(f"{path}.name", f"duplicate name {_show(name)} (also {names[name]})")
            names.setdefault(name, path)
        if address and port and mode == "transparent":
            key = (address, port)
            if key in dests:
                r.err(path, f"duplicate destination {address}:{port} (also {dests[key]})")
            dests.setdefault(key, path)
        peers.append(peer)
    return tuple(peers)


_ALLOW_IDS = ("cn", "dns", "uri", "ip_san", "subject", "spki_sha256")


def _allow(r: _Reader, raw: object, path: str) -> tuple[AllowRule, ...]:
    if not isinstance(raw, list) or not raw:
        r.err(path, "must be a non-empty list of allowed identities")
        return ()
    rules = []
    for j, item in enumerate(raw):
        p = f"{path}[{j}]"
        d = r.mapping(item, p, {*_ALLOW_IDS, "ip"})
        if d is None:
            continue
        if not any(k in d for k in _ALLOW_IDS):
            r.err(p, f"at least one of {', '.join(_ALLOW_IDS)} is required")
        rules.append(
            AllowRule(
                cn=r.get(d, "cn", p, _str),
                dns=r.get(d, "dns", p, lambda x: _str(x).lower()),
                uri=r.get(d, "uri", p, _str),
                ip_san=r.get(d, "ip_san", p, _ip),
                subject=r.get(d, "subject", p, _subject),
                spki_sha256=r.get(d, "spki_sha256", p, _spki),
                ip=r.get(d, "ip", p, _ip),
            )
        )
    return tuple(rules)


_IN_KEYS = {"name", "port", "device_port", "allow", "ca", "profile", "listen"}


def _inbound(r: _Reader, raw: object, mode: str) -> tuple[InboundPort, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.err("inbound", f"must be a list, got {_kind(raw)}")
        return ()
    out = []
    names: dict[str, str] = {}
    ports: dict[int, str] = {}
    for i, item in enumerate(raw):
        path = f"inbound[{i}]"
        req = {"name", "allow"} | ({"listen"} if mode == "explicit" else {"port"})
        d = r.mapping(item, path, _IN_KEYS, req)
        if d is None:
            continue
        name = r.get(d, "name", path, _str)
        listen = r.get(d, "listen", path, _endpoint)
        if listen and mode != "explicit":
            r.err(f"{path}.listen", "only valid with mode: explicit")
        port = r.get(d, "port", path, _port) or (listen.port if listen else None)
        device_port = r.get(d, "device_port", path, _port) or port
        allow = _allow(r, d.get("allow"), f"{path}.allow") if "allow" in d else ()
        if name:
            if name in names:
                r.err(f"{path}.name", f"duplicate name {_show(name)} (also {names[name]})")
            names.setdefault(name, path)
        if port and mode == "transparent":
            if port in ports:
                r.err(f"{path}.port", f"duplicate port {port} (also {ports[port]})")
            ports.setdefault(port, path)
        out.append(
            InboundPort(
                name=name or f"inbound{i}",
                port=port or 0,
                device_port=device_port or 0,
                allow=allow,
                ca=r.get(d, "ca", path, r.file),
                profile=r.get(d, "profile", path, _profile),
                listen=listen,
            )
        )
    return tuple(out)


def _passthrough(r: _Reader, raw: object) -> Passthrough:
    d = r.mapping(raw, "passthrough", {"inbound_ports"}) or {}
    ports = d.get("inbound_ports") or []
    if not isinstance(ports, list):
        r.err("passthrough.inbound_ports", f"must be a list of ports, got {_kind(ports)}")
        return Passthrough()
    good = []
    for i, p in enumerate(ports):
        try:
            good.append(_port(p))
        except _Invalid as e:
            r.err(f"passthrough.inbound_ports[{i}]", str(e))
    return Passthrough(tuple(good))


def _ntp(r: _Reader, raw: object) -> Ntp:
    d = r.mapping(raw, "ntp", {"servers"}) or {}
    servers = d.get("servers")
    if servers is None:
        return Ntp()
    if not isinstance(servers, list):
        r.err("ntp.servers", f"must be a list of IPv4 addresses, got {_kind(servers)}")
        return Ntp()
    if len(servers) > NTP_MAX_SERVERS:
        r.err("ntp.servers", f"at most {NTP_MAX_SERVERS} servers, got {len(servers)}")
    good: list[str] = []
    for i, value in enumerate(servers):
        where = f"ntp.servers[{i}]"
        try:
            addr = ipaddress.ip_address(value.strip() if isinstance(value, str) else "")
        except ValueError:
            r.err(where, f"not an IPv4 address: {_show(value)} (names are not resolved: the box "
                         "has no DNS of its own)")  # fmt: skip
            continue
        if addr.version != 4:
            r.err(where, f"{addr}: only IPv4 NTP servers are supported")
        elif addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_reserved:
            r.err(where, f"{addr}: not a unicast address of a LAN host")
        elif str(addr) in good:
            r.err(where, f"{addr} is listed twice")
        else:
            good.append(str(addr))
    return Ntp(tuple(good))


def _limits(r: _Reader, raw: object) -> Limits:
    keys = {"max_connections", "max_handshakes", "max_handshakes_per_source",
            "handshake_timeout", "connect_timeout", "idle_timeout", "buffer_size", "drain_timeout",
            "keepalive"}  # fmt: skip
    d = r.mapping(raw, "limits", keys) or {}
    dflt = Limits()
    lim = Limits(
        max_connections=r.get(d, "max_connections", "limits", _pos_int, dflt.max_connections),
        max_handshakes=r.get(d, "max_handshakes", "limits", _pos_int, dflt.max_handshakes),
        max_handshakes_per_source=r.get(
            d, "max_handshakes_per_source", "limits", _pos_int, dflt.max_handshakes_per_source
        ),
        handshake_timeout=r.get(d, "handshake_timeout", "limits", _seconds, 10.0),
        connect_timeout=r.get(d, "connect_timeout", "limits", _seconds, 10.0),
        idle_timeout=r.get(d, "idle_timeout", "limits", _seconds, 0.0),
        buffer_size=r.get(d, "buffer_size", "limits", _pos_int, dflt.buffer_size),
        drain_timeout=r.get(d, "drain_timeout", "limits", _seconds, 30.0),
        keepalive=r.get(d, "keepalive", "limits", _bool, True),
    )
    for k in ("handshake_timeout", "connect_timeout"):
        if k in d and getattr(lim, k) == 0:
            r.err(f"limits.{k}", "must be > 0")
    if "buffer_size" in d and lim.buffer_size < 4096:
        r.err("limits.buffer_size", f"must be >= 4096, got {lim.buffer_size}")
    return lim


_TOP_KEYS = {"device", "interfaces", "mode", "interception", "listeners", "identity",
             "trust", "tls", "outbound", "inbound", "passthrough", "ntp", "limits", "logging",
             "workers", *OPS_SECTIONS}  # fmt: skip


def parse_config(raw: object, path: Path, check_files: bool = True) -> Config:
    """Validate an already-parsed YAML document (see `load_config`)."""
    r = _Reader(path.parent, check_files)
    top = r.mapping(raw, "", _TOP_KEYS, {"device", "identity", "trust"})
    if top is None:
        raise ConfigError(r.problems)
    mode = r.get(top, "mode", "", _choice(MODES), "transparent")
    device = _device(r, top.get("device"))
    trust = r.mapping(top.get("trust"), "trust", {"ca", "crl", "crl_check"}, {"ca"}) or {}
    tls = r.mapping(top.get("tls"), "tls", {"profile", "session_lifetime"}) or {}
    log = r.mapping(top.get("logging"), "logging", {"level"}) or {}
    cfg_kwargs = dict(
        path=path,
        device=device,
        identity=_identity(r, top.get("identity")),
        trust_ca=r.get(trust, "ca", "trust", r.file),
        trust_crl=r.get(trust, "crl", "trust", r.file),
        crl_check=r.get(trust, "crl_check", "trust", _choice(CRL_CHECKS), "leaf"),
        mode=mode,
        interception=r.get(top, "interception", "", _choice(INTERCEPTIONS), "tproxy"),
        interfaces=_interfaces(r, top.get("interfaces")),
        listeners=_listeners(r, top.get("listeners")),
        profile=r.get(tls, "profile", "tls", _profile, DEFAULT_PROFILE),
        outbound=_outbound(r, top.get("outbound"), mode),
        inbound=_inbound(r, top.get("inbound"), mode),
        passthrough=_passthrough(r, top.get("passthrough")),
        ntp=_ntp(r, top.get("ntp")),
        limits=_limits(r, top.get("limits")),
        logging=Logging(level=r.get(log, "level", "logging", _choice(LOG_LEVELS), "info")),
        workers=r.get(top, "workers", "", _pos_int, 1),
        session_lifetime=r.get(
            tls, "session_lifetime", "tls", _session_lifetime, DEFAULT_SESSION_LIFETIME
        ),
    )
    if cfg_kwargs["trust_crl"] is not None and cfg_kwargs["session_lifetime"]:
        # A resumed handshake skips certificate verification, and with it the CRL.
        r.err(
            "tls.session_lifetime",
            "must be 0 with trust.crl: a resumed session would skip the revocation check",
        )
    cfg_kwargs["ops"], ops_problems = parse_ops_sections(top)
    for ops_path, ops_message in ops_problems:
        r.err(ops_path, ops_message)
    if mode == "explicit":
        raw_device = top.get("device")
        ip_given = isinstance(raw_device, dict) and "ip" in raw_device
        if cfg_kwargs["inbound"] and device.ip is None and ip_given:
            r.err("device.ip", "must be an IP address (not auto) with mode: explicit")
        seen: dict[Endpoint, str] = {}
        for sect in ("outbound", "inbound"):
            for i, e in enumerate(cfg_kwargs[sect]):
                if e.listen is None:
                    continue
                if e.listen in seen:
                    r.err(f"{sect}[{i}].listen", f"{e.listen} already used by {seen[e.listen]}")
                seen.setdefault(e.listen, f"{sect}[{i}]")
    if r.problems:
        raise ConfigError(r.problems)
    return Config(**cfg_kwargs)


def load_config(path: str | os.PathLike, check_files: bool = True) -> Config:
    """Read and validate a YAML configuration file.

    `check_files=False` skips the existence checks of certificate/key/CA files (for tools such as
    the rules generator that run where the TLS material is absent).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("", f"{p}: configuration file not found")]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem("", f"{p}: cannot read configuration: {e}")]) from None
    return parse_text(text, p.resolve(), check_files)


def parse_text(text: str, path: Path, check_files: bool = True) -> Config:
    """Validate configuration YAML `text` read from `path` (see `load_config`); every YAML
    error, too, is a ConfigError."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError([Problem("", f"{where}: invalid YAML: {problem}")]) from None
    except ValueError as e:  # a timestamp such as 2001-13-01 (PyYAML's datetime() call)
        raise ConfigError([Problem("", f"{path}: invalid YAML: {e}")]) from None
    except RecursionError:
        raise ConfigError([Problem("", f"{path}: invalid YAML: nested too deeply")]) from None
    return parse_config(raw, path, check_files)
