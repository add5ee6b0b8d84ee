"""Load and validate the medtls YAML configuration into frozen dataclasses.

`load_config(path)` returns a `Config` or raises `ConfigError`, whose `problems` list names every
wrong key with its path (``outbound[1].verify.ca: file not found: /x``). The keys, their types and
defaults are declared once in `medtls.config.schema`; this module turns the walked values into the
dataclasses and checks what depends on several keys. Unknown keys are errors. Relative paths are
resolved against the directory of the configuration file, for every path key.

The same `Config` is consumed by the proxy daemon and by the nftables rules generator
(`medtls.interception`), so it only describes intent; it opens no sockets and reads no keys.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml  # (no `typing`: 0.5 MiB in each serving process, docs/performance.md item 43)

from medtls.config.ops import LogForwardConfig, OpsConfig, build_log_forward, build_ops
from medtls.config.profiles import LEGACY_PROFILES
from medtls.config.schema import (  # noqa: F401 - re-exported: the package's public names
    ACME_CHALLENGES,
    ALLOW_IDS,
    CRL_CHECKS,
    DEFAULT_ENROLLMENT_STATE_DIR,
    DEFAULT_PROFILE,
    DEFAULT_SESSION_LIFETIME,
    INTERCEPTIONS,
    KEY_TYPES,
    LOG_LEVELS,
    MAX_SESSION_LIFETIME,
    MODES,
    NTP_MAX_SERVERS,
    SCHEMA,
    VERIFY_IDS,
    ConfigError,
    Endpoint,
    Problem,
    Reader,
    Values,
    default,
    kind,
    parse_dn,
    show,
)


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

    device: str = default("interfaces.device")
    lan: str = default("interfaces.lan")
    bridge: str = default("interfaces.bridge")


@dataclass(frozen=True)
class Listeners:
    """Local ports that intercepted flows are delivered to in transparent mode."""

    outbound: int = default("listeners.outbound")
    inbound: int = default("listeners.inbound")
    address: str = default("listeners.address")


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
    protocol: str = "tcp"  # tcp | dicom | hl7: how a refusal reaches the device


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
    # protocol: dicom ports: the calling AE titles this identity may use; None: any
    calling_ae: tuple[str, ...] | None = None


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
    protocol: str = "tcp"  # tcp | dicom | hl7: how a refusal reaches the peer


@dataclass(frozen=True)
class Passthrough:
    """Plaintext LAN -> device ports let through by the interception rules (off by default)."""

    inbound_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Ntp:
    """NTP servers on the LAN the box's own clock synchronises with, as the device (IPv4)."""

    servers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    """Resource limits and timeouts (seconds; 0 disables idle_timeout)."""

    max_connections: int = default("limits.max_connections")
    max_handshakes: int = default("limits.max_handshakes")
    max_handshakes_per_source: int = default("limits.max_handshakes_per_source")
    handshake_timeout: float = default("limits.handshake_timeout")
    connect_timeout: float = default("limits.connect_timeout")
    idle_timeout: float = default("limits.idle_timeout")
    buffer_size: int = default("limits.buffer_size")
    drain_timeout: float = default("limits.drain_timeout")
    keepalive: bool = default("limits.keepalive")


@dataclass(frozen=True)
class Logging:
    level: str = default("logging.level")
    syslog: LogForwardConfig = field(default_factory=LogForwardConfig)


@dataclass(frozen=True)
class AcmeAccount:
    """The ACME server (its directory URL and the CA of its HTTPS) and the account's binding."""

    directory: str
    ca: Path  # default: trust.ca
    eab_key_id: str | None = None
    eab_hmac_key_file: Path | None = None
    contact: tuple[str, ...] = ()


@dataclass(frozen=True)
class Enrollment:
    """ACME enrollment of the identity. `ips` are addresses (``device`` already resolved to
    device.ip); the live certificate is ``<state_dir>/live/fullchain.pem`` (+ ``key.pem``),
    `live` a symlink swapped atomically to a generation directory."""

    acme: AcmeAccount
    ips: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    challenges: tuple[str, ...] = ACME_CHALLENGES
    validation_sources: tuple[str, ...] = ()
    state_dir: Path = Path(DEFAULT_ENROLLMENT_STATE_DIR)
    renew_at: float = default("enrollment.renew_at")
    key_type: str = default("enrollment.key_type")

    @property
    def live_dir(self) -> Path:
        return self.state_dir / "live"

    @property
    def certificate_path(self) -> Path:
        return self.live_dir / "fullchain.pem"

    @property
    def key_path(self) -> Path:
        return self.live_dir / "key.pem"

    @property
    def state_path(self) -> Path:
        return self.state_dir / "state.json"


@dataclass(frozen=True)
class CrlFetch:
    """`crl_fetch`: the box keeps trust.crl current itself (medtls crl-fetch, on a timer)."""

    urls: tuple[str, ...] = ()
    interval: float = default("crl_fetch.interval")
    timeout: float = default("crl_fetch.timeout")
    max_bytes: int = default("crl_fetch.max_bytes")
    state_file: str = default("crl_fetch.state_file")


@dataclass(frozen=True)
class Config:
    """A validated medtls configuration."""

    path: Path
    device: Device
    identity: Identity
    trust_ca: Path
    trust_crl: Path | None = None  # PEM CRLs; peers of a CA without a valid CRL in it fail
    # leaf: the peer certificate; chain: every CA certificate too
    crl_check: str = default("trust.crl_check")
    mode: str = default("mode")
    interception: str = default("interception")
    interfaces: Interfaces = field(default_factory=Interfaces)
    listeners: Listeners = field(default_factory=Listeners)
    profile: str = default("tls.profile")
    outbound: tuple[OutboundPeer, ...] = ()
    inbound: tuple[InboundPort, ...] = ()
    passthrough: Passthrough = field(default_factory=Passthrough)
    ntp: Ntp = field(default_factory=Ntp)
    limits: Limits = field(default_factory=Limits)
    logging: Logging = field(default_factory=Logging)
    workers: int = default("workers")
    session_lifetime: int = default("tls.session_lifetime")
    ops: OpsConfig = field(default_factory=OpsConfig)
    enrollment: Enrollment | None = None  # None: the identity is issued by hand
    crl_fetch: CrlFetch | None = None

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


# --------------------------------------------------------------------------- YAML


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
                None, None, f"a {kind(key)} cannot be a key", mark
            ) from None
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {show(key)}", mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

# --------------------------------------------------------------------------- building
# The schema walk has decided types, defaults, unknown and required keys; what follows checks what
# depends on several keys and builds the dataclasses. `v` is a walked mapping (schema.Values).


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


def _device(r: Reader, v: Values | None) -> Device:
    v = v or Values(ip=None, mac=None, prefix=None, gateway=None)
    ip, prefix, gateway = v["ip"], v["prefix"], v["gateway"]
    has_prefix, has_gateway = "prefix" in v.given, "gateway" in v.given
    if has_gateway and not has_prefix:
        r.err("device.prefix", "required with device.gateway (the device's subnet length, e.g. 24)")
    elif has_prefix and not has_gateway:
        r.err("device.gateway", "required with device.prefix (the device's router on its subnet)")
    elif ip is not None and prefix is not None and gateway is not None:
        problem = gateway_problem(ip, prefix, gateway)
        if problem:
            r.err("device.gateway", problem)
    return Device(ip=ip, mac=v["mac"], prefix=prefix, gateway=gateway)


def _listeners(r: Reader, v: Values | None) -> Listeners:
    if v is None:
        return Listeners()
    lis = Listeners(**v)
    if lis.outbound == lis.inbound:
        r.err("listeners.inbound", f"same port as listeners.outbound ({lis.inbound})")
    return lis


def _verify(r: Reader, v: Values | None, path: str) -> Verify | None:
    if v is None:
        return None
    if not any(k in v.present for k in VERIFY_IDS):
        r.err(path, f"at least one of {', '.join(VERIFY_IDS)} is required")
    return Verify(**v)


def _outbound(r: Reader, items: list, mode: str) -> tuple[OutboundPeer, ...]:
    peers = []
    names: dict[str, str] = {}
    dests: dict[tuple[str, int], str] = {}
    for i, d in enumerate(items):
        path = f"outbound[{i}]"
        if d is None:
            continue
        needed = "listen" if mode == "explicit" else "port"
        if needed not in d.present:
            r.err(f"{path}.{needed}", "required key missing")
        name, address, port, plaintext = d["name"], d["address"], d["port"], d["plaintext"]
        listen = d["listen"]
        if listen and mode != "explicit":
            r.err(f"{path}.listen", "only valid with mode: explicit")
        tls_port = d["tls_port"]
        if tls_port is None:
            tls_port = port
        if tls_port is None and "tls_port" not in d.present and "port" not in d.present:
            r.err(f"{path}.port", "required key missing (or give tls_port)")
        verify = None
        if "verify" in d.present:
            verify = _verify(r, d["verify"], f"{path}.verify")
            if plaintext:
                r.err(f"{path}.verify", "not allowed with plaintext: true")
        elif not plaintext:
            r.err(f"{path}.verify", "required key missing (or set plaintext: true)")
        if plaintext:
            for k in ("sni", "profile", "protocol"):
                if k in d.present:
                    r.err(f"{path}.{k}", "not allowed with plaintext: true")
        peers.append(
            OutboundPeer(
                name=name or f"outbound{i}",
                address=address or "",
                port=port,
                tls_port=tls_port or 0,
                sni=d["sni"],
                verify=verify,
                plaintext=plaintext,
                profile=d["profile"],
                listen=listen,
                protocol=d["protocol"],
            )
        )
        if name:
            if name in names:
                r.err(f"{path}.name", f"duplicate name {show(name)} (also {names[name]})")
            names.setdefault(name, path)
        if address and port and mode == "transparent":
            key = (address, port)
            if key in dests:
                r.err(path, f"duplicate destination {address}:{port} (also {dests[key]})")
            dests.setdefault(key, path)
    return tuple(peers)


def _allow(r: Reader, items: list, path: str) -> tuple[AllowRule, ...]:
    rules = []
    for j, d in enumerate(items or ()):
        if d is None:
            continue
        if not any(k in d.present for k in ALLOW_IDS):
            r.err(f"{path}[{j}]", f"at least one of {', '.join(ALLOW_IDS)} is required")
        ae = d["calling_ae"]
        rules.append(AllowRule(**{**d, "calling_ae": tuple(ae) if ae is not None else None}))
    return tuple(rules)


def _inbound(r: Reader, items: list, mode: str) -> tuple[InboundPort, ...]:
    out = []
    names: dict[str, str] = {}
    ports: dict[int, str] = {}
    for i, d in enumerate(items):
        path = f"inbound[{i}]"
        if d is None:
            continue
        needed = "listen" if mode == "explicit" else "port"
        if needed not in d.present:
            r.err(f"{path}.{needed}", "required key missing")
        name, listen = d["name"], d["listen"]
        if listen and mode != "explicit":
            r.err(f"{path}.listen", "only valid with mode: explicit")
        port = d["port"] or (listen.port if listen else None)
        device_port = d["device_port"] or port
        if "allow" in d.present and d["allow"] is None:
            r.err(f"{path}.allow", "must be a non-empty list of allowed identities")
        allow = _allow(r, d["allow"], f"{path}.allow")
        if d["protocol"] != "dicom":
            for j, rule in enumerate(allow):
                if rule.calling_ae is not None:
                    r.err(f"{path}.allow[{j}].calling_ae", "only valid with protocol: dicom")
        if name:
            if name in names:
                r.err(f"{path}.name", f"duplicate name {show(name)} (also {names[name]})")
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
                ca=d["ca"],
                profile=d["profile"],
                listen=listen,
                protocol=d["protocol"],
            )
        )
    return tuple(out)


def _ntp(r: Reader, v: Values | None) -> Ntp:
    servers = v["servers"] if v else ()
    if not servers:
        return Ntp()
    if len(servers) > NTP_MAX_SERVERS:
        r.err("ntp.servers", f"at most {NTP_MAX_SERVERS} servers, got {len(servers)}")
    good: list[str] = []
    for i, addr in enumerate(servers):
        if addr is None:
            continue
        if addr in good:
            r.err(f"ntp.servers[{i}]", f"{addr} is listed twice")
        else:
            good.append(addr)
    return Ntp(tuple(good))


def _limits(r: Reader, v: Values | None) -> Limits:
    if v is None:
        return Limits()
    lim = Limits(**v)
    for k in ("handshake_timeout", "connect_timeout"):
        if k in v.present and getattr(lim, k) == 0:
            r.err(f"limits.{k}", "must be > 0")
    if "buffer_size" in v.present and lim.buffer_size < 4096:
        r.err("limits.buffer_size", f"must be >= 4096, got {lim.buffer_size}")
    return lim


def _enrollment(r: Reader, v: Values | None, top: Values, mode: str) -> Enrollment | None:
    """The enrollment section and its cross-key rules (None: absent, certificates by hand)."""
    if v is None or v["acme"] is None:
        return None
    acme, idents = v["acme"], v["identifiers"] or Values(ip=("device",), dns=())
    trust = top["trust"]
    device_ip = top["device"]["ip"] if top["device"] else None
    if ("eab_key_id" in acme.given) != ("eab_hmac_key_file" in acme.given):
        missing = "eab_hmac_key_file" if "eab_key_id" in acme.given else "eab_key_id"
        r.err(f"enrollment.acme.{missing}", "eab_key_id and eab_hmac_key_file go together")
    hmac_file = Path(acme["eab_hmac_key_file"]) if acme["eab_hmac_key_file"] else None
    if hmac_file is not None and r.check_files and not hmac_file.exists():
        r.err("enrollment.acme.eab_hmac_key_file", f"file not found: {hmac_file}")
    if hmac_file is not None and r.check_files and hmac_file.is_file():
        mode_bits = hmac_file.stat().st_mode & 0o077
        if mode_bits:
            r.err(
                "enrollment.acme.eab_hmac_key_file",
                f"{hmac_file} is readable or writable by group/other (mode "
                f"{hmac_file.stat().st_mode & 0o777:o}): chmod 600 it",
            )
    ips: list[str] = []
    for i, ip in enumerate(idents["ip"] or ()):
        if ip == "device":
            if device_ip is None:
                r.err(f"enrollment.identifiers.ip[{i}]", "device needs device.ip (not auto)")
                continue
            ip = device_ip
        if ip is not None and ip not in ips:
            ips.append(ip)
    dns = tuple(d for d in idents["dns"] or () if d is not None)
    if not ips and not dns:
        r.err("enrollment.identifiers", "at least one ip or dns identifier is required")
    challenges = tuple(c for c in v["challenges"] or () if c is not None)
    if len(set(challenges)) != len(challenges):
        r.err("enrollment.challenges", "a challenge type is listed twice")
    sources = tuple(s for s in v["validation_sources"] or () if s is not None)
    if mode == "transparent" and not sources:
        r.err(
            "enrollment.validation_sources",
            "required in transparent mode: the CA's validation addresses (only they reach the "
            "challenge responder on the device's address)",
        )
    return Enrollment(
        acme=AcmeAccount(
            directory=acme["directory"] or "",
            ca=acme["ca"] or (trust["ca"] if trust else None),
            eab_key_id=acme["eab_key_id"],
            eab_hmac_key_file=hmac_file,
            contact=tuple(c for c in acme["contact"] or () if c is not None),
        ),
        ips=tuple(ips),
        dns=dns,
        challenges=challenges,
        validation_sources=sources,
        state_dir=Path(v["state_dir"]),
        renew_at=v["renew_at"],
        key_type=v["key_type"],
    )


def _identity(r: Reader, top: Values, enrollment: Enrollment | None) -> Identity | None:
    """identity: given by hand, or (with enrollment) defaulting to the enrolled live files."""
    v = top["identity"]
    if enrollment is None:
        if "identity" not in top.present:
            r.err("identity", "required key missing")
            return None
        if v is None:  # not a mapping: already reported
            return None
        for k in ("certificate", "key"):
            if k not in v.present:
                r.err(f"identity.{k}", "required key missing")
        return Identity(**v) if "certificate" in v.given and "key" in v.given else None
    v = v or Values(certificate=None, key=None, key_passphrase_file=None, ca=None)
    if v["key_passphrase_file"] is not None:
        r.err(
            "identity.key_passphrase_file",
            "not used with enrollment (the enrolled key is generated on the box unencrypted)",
        )
    return Identity(
        certificate=v["certificate"] or enrollment.certificate_path,
        key=v["key"] or enrollment.key_path,
        ca=v["ca"],
    )


def _section(v: Values | None, name: str) -> Values:
    """A walked section, or its defaults when it was not a mapping (already reported)."""
    return v if v is not None else Reader(None, False).section(SCHEMA.keys[name].type, None, name)


def _crl_fetch(r: Reader, top: Values, trust_crl: Path | None) -> CrlFetch | None:
    v = top["crl_fetch"]
    if "crl_fetch" not in top.present or v is None:
        return None
    if trust_crl is None:
        r.err("crl_fetch", "requires trust.crl (the file it keeps current)")
    urls = tuple(dict.fromkeys(u for u in v["urls"] or () if u is not None))
    return CrlFetch(urls, v["interval"], v["timeout"], v["max_bytes"], v["state_file"])


def _logging(r: Reader, v: Values | None) -> Logging:
    v = _section(v, "logging")
    return Logging(v["level"], build_log_forward(r, v["syslog"]))


def parse_config(raw: object, path: Path, check_files: bool = True) -> Config:
    """Validate an already-parsed YAML document (see `load_config`)."""
    r = Reader(path.parent, check_files)
    top = r.section(SCHEMA, raw, "")
    if top is None:
        raise ConfigError(r.problems)
    mode = top["mode"]
    trust, tls = _section(top["trust"], "trust"), _section(top["tls"], "tls")
    enrollment = _enrollment(r, top["enrollment"], top, mode)
    cfg_kwargs = dict(
        path=path,
        device=_device(r, top["device"]),
        identity=_identity(r, top, enrollment),
        trust_ca=trust["ca"],
        trust_crl=trust["crl"],
        crl_check=trust["crl_check"],
        mode=mode,
        interception=top["interception"],
        interfaces=Interfaces(**_section(top["interfaces"], "interfaces")),
        listeners=_listeners(r, top["listeners"]),
        profile=tls["profile"],
        outbound=_outbound(r, top["outbound"] or (), mode),
        inbound=_inbound(r, top["inbound"] or (), mode),
        passthrough=Passthrough(
            tuple(p for p in top["passthrough"]["inbound_ports"] or () if p is not None)
            if top["passthrough"]
            else ()
        ),
        ntp=_ntp(r, top["ntp"]),
        limits=_limits(r, top["limits"]),
        logging=_logging(r, top["logging"]),
        workers=top["workers"],
        session_lifetime=tls["session_lifetime"],
        ops=build_ops(r, top),
        enrollment=enrollment,
        crl_fetch=_crl_fetch(r, top, trust["crl"]),
    )
    if cfg_kwargs["trust_crl"] is not None and cfg_kwargs["session_lifetime"]:
        # A resumed handshake skips certificate verification, and with it the CRL.
        r.err(
            "tls.session_lifetime",
            "must be 0 with trust.crl: a resumed session would skip the revocation check",
        )
    if mode == "explicit":
        device, raw_device = cfg_kwargs["device"], top["device"]
        ip_given = raw_device is not None and "ip" in raw_device.present
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
