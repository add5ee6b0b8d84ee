"""The medtls configuration schema: every key of the file once, with its type, default and doc.

`SCHEMA` describes the whole file, core and operations sections alike. `Reader` walks it over the
parsed YAML: unknown keys, required keys, types and defaults are decided here and nowhere else, and
every problem becomes a `Problem(key path, message)`. What depends on several keys (a port required
in transparent mode, duplicate names, ...) is checked by the builders in `medtls.config` and
`medtls.config.ops`, which turn the walked values into the frozen dataclasses.

Defaults are written in the file's own terms (``"127.0.0.1:9750"``, ``"2025-01-01"``) and pass the
same parser as a configured value, so the docs, the JSON Schema and the dataclasses show one value.

``python -m medtls.config --json`` prints the JSON Schema (docs/medtls.schema.json).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path

from medtls.config.profiles import PROFILES

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
NTP_MAX_SERVERS = 8
AUDIT_TRANSPORTS = ("tls", "local", "none")
DEFAULT_METRICS_LISTEN = "127.0.0.1:9750"
DEFAULT_CONTROL_SOCKET = "/run/medtls/control.sock"
ACME_CHALLENGES = ("tls-alpn-01", "http-01")
KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072")
DEFAULT_ENROLLMENT_STATE_DIR = "/var/lib/medtls/enrollment"
# In a root:medtls directory of its own: the fetch runs as root without CAP_DAC_OVERRIDE and
# cannot write into /var/lib/medtls (the daemon's StateDirectory, owned by its user).
DEFAULT_CRL_FETCH_STATE_FILE = "/var/lib/medtls/crl-fetch/state.json"
OPS_SECTIONS = ("metrics", "audit", "clock", "control", "led")
LOG_FORWARD_TRANSPORTS = ("none", "udp", "tcp", "tls")


@dataclass(frozen=True)
class Problem:
    """One configuration error: `path` is a key path such as ``inbound[0].allow[1].cn``."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """The configuration is invalid; `problems` lists every error found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Invalid(ValueError):
    """A value a scalar parser refuses; the reader adds the key path."""


# --------------------------------------------------------------------------- values in messages

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 60, 60, 4, 4


def show(v: object) -> str:
    """A value for an error message, bounded: YAML aliases can make a small file a huge value."""
    return _REPR.repr(v)


def kind(v: object) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(v), type(v).__name__
    )


# --------------------------------------------------------------------------- scalar types


class Scalar:
    """A leaf type: `parse(value, reader)` returns the Python value or raises Invalid."""

    __slots__ = ("json", "name", "parse")

    def __init__(self, name: str, parse, json: dict):
        self.name = name
        self.parse = parse
        self.json = json


def _str(v: object, r=None) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Invalid(f"must be a non-empty string, got {kind(v)} {show(v)}")
    return v.strip()


def _text(v: object, r=None) -> str:
    if not isinstance(v, str):
        raise Invalid(f"must be a string, got {kind(v)} {show(v)}")
    return v.strip()


def _bool(v: object, r=None) -> bool:
    if not isinstance(v, bool):
        raise Invalid(f"must be true or false, got {show(v)}")
    return v


def _port(v: object, r=None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 65535:
        raise Invalid(f"must be a port number 1-65535, got {show(v)}")
    return v


def _pos_int(v: object, r=None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise Invalid(f"must be a positive integer, got {show(v)}")
    return v


def _seconds(v: object, r=None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise Invalid(f"must be a number of seconds >= 0, got {show(v)}")
    return float(v)


def _pos_seconds(v: object, r=None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise Invalid(f"must be a number of seconds > 0, got {show(v)}")
    return float(v)


def _session_lifetime(v: object, r=None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_SESSION_LIFETIME:
        raise Invalid(
            f"must be whole seconds from 0 (no resumption) to {MAX_SESSION_LIFETIME} "
            f"(7 days, RFC 8446), got {show(v)}"
        )
    return v


def _ip(v: object, r=None) -> str:
    try:
        return str(ipaddress.ip_address(_str(v) if not isinstance(v, int) else v))
    except ValueError:
        raise Invalid(f"not an IP address: {show(v)}") from None


def _device_ip(v: object, r=None) -> str | None:
    return None if v == "auto" else _ip(v)


def _ipv4_router(v: object, r=None) -> str:
    try:
        addr = ipaddress.IPv4Address(_str(v))
    except ValueError:
        raise Invalid(f"not an IPv4 address: {show(v)}") from None
    if addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_reserved:
        raise Invalid(f"{addr}: not a unicast address of a router")
    return str(addr)


def _ntp_server(v: object, r=None) -> str:
    try:
        addr = ipaddress.ip_address(v.strip() if isinstance(v, str) else "")
    except ValueError:
        raise Invalid(f"not an IPv4 address: {show(v)} (names are not resolved: the box has "
                      "no DNS of its own)") from None  # fmt: skip
    if addr.version != 4:
        raise Invalid(f"{addr}: only IPv4 NTP servers are supported")
    if addr.is_multicast or addr.is_loopback or addr.is_unspecified or addr.is_reserved:
        raise Invalid(f"{addr}: not a unicast address of a LAN host")
    return str(addr)


def _prefix_len(v: object, r=None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 31:
        raise Invalid(f"must be the device's IPv4 prefix length 1-31 (e.g. 24), got {show(v)}")
    return v


def _choice(options: tuple[str, ...]) -> Scalar:
    def parse(v: object, r=None) -> str:
        if v not in options:
            raise Invalid(f"must be one of {', '.join(options)}, got {show(v)}")
        return v

    return Scalar(" | ".join(options), parse, {"enum": list(options)})


def _profile(v: object, r=None) -> str:
    if not isinstance(v, str) or v not in PROFILES:
        raise Invalid(f"unknown TLS profile {show(v)} (known: {', '.join(PROFILES)})")
    return v


_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _mac(v: object, r=None) -> str:
    s = _str(v).lower()
    if not _MAC.match(s):
        raise Invalid(f"not a MAC address (aa:bb:cc:dd:ee:ff): {show(v)}")
    return s


def _spki(v: object, r=None) -> str:
    s = _str(v).lower().replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{64}", s):
        raise Invalid("must be 64 hex digits (SHA-256 of the DER SubjectPublicKeyInfo)")
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


def _subject(v: object, r=None) -> str:
    s = _str(v)
    if parse_dn(s) is None:
        raise Invalid(f"not a distinguished name like 'CN=pacs,O=Hospital': {show(v)}")
    return s


@dataclass(frozen=True)
class Endpoint:
    """A ``HOST:PORT`` pair: a listen address (explicit mode, metrics)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_ENDPOINT = re.compile(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]+):(\d+)")


def parse_endpoint(v: object, r=None) -> Endpoint:
    """``IP:PORT``, ``[IPv6]:PORT`` or ``localhost:PORT`` (= 127.0.0.1); names are not resolved."""
    s = _str(v)
    m = _ENDPOINT.fullmatch(s)
    if not m:
        raise Invalid(f"must be HOST:PORT (e.g. 127.0.0.1:11112), got {show(v)}")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        if host != "localhost":
            raise Invalid(f"listen host must be an IP address, got {show(host)}") from None
        host = "127.0.0.1"
    _port(port)
    return Endpoint(host, port)


def _resolve(v: object, r) -> Path:
    p = Path(_str(v))
    if p.is_absolute():
        return p
    if r is None or r.base_dir is None:
        raise Invalid(f"must be an absolute path, got {show(v)}")
    return r.base_dir / p


def _file(v: object, r) -> Path:
    """A file the proxy reads (certificates, keys, CAs): checked unless check_files is off."""
    p = _resolve(v, r)
    if r is not None and r.check_files:
        if not p.exists():
            raise Invalid(f"file not found: {p}")
        if not p.is_file():
            raise Invalid(f"not a regular file: {p}")
        if not os.access(p, os.R_OK):
            raise Invalid(f"file not readable: {p}")
    return p


def _path(v: object, r) -> str:
    """A path used at run time (sockets, state, files read later): resolved, not checked.
    An empty string leaves the key unset."""
    return "" if v == "" else str(_resolve(v, r))


def _spool(v: object, r) -> str:
    if v in ("off", ""):
        return v
    if not isinstance(v, str) or not v.strip() or v.endswith("/"):
        raise Invalid(f"must be an absolute file path or off, got {show(v)}")
    try:
        return _path(v, r)
    except Invalid:
        raise Invalid(f"must be an absolute file path or off, got {show(v)}") from None


def _date(v: object, r=None) -> float:
    try:
        if isinstance(v, dt.datetime):
            moment = v
        elif isinstance(v, dt.date):
            moment = dt.datetime(v.year, v.month, v.day)
        elif isinstance(v, str):
            moment = dt.datetime.fromisoformat(v)
        else:
            raise ValueError
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.timestamp()
    except ValueError:
        raise Invalid(f"must be a date like 2026-01-31, got {show(v)}") from None


def _https_url(v: object, r=None) -> str:
    s = _str(v)
    if not re.fullmatch(r"https://[^\s/?#]+(/[^\s]*)?", s):
        raise Invalid(f"must be an https:// URL (the ACME directory), got {show(v)}")
    return s


def _mailto(v: object, r=None) -> str:
    s = _str(v)
    if not re.fullmatch(r"mailto:[^\s@]+@[^\s@]+", s):
        raise Invalid(f"must be a mailto: URI such as mailto:pki@hospital.example, got {show(v)}")
    return s


def _enroll_ip(v: object, r=None) -> str:
    return "device" if v == "device" else _ip(v)


def _ipv4_net(v: object, r=None) -> str:
    try:
        return str(ipaddress.IPv4Network(_str(v) if not isinstance(v, int) else v))
    except ValueError as e:
        raise Invalid(f"not an IPv4 address or network (198.18.0.40/32): {show(v)} ({e})") from None


def _fraction(v: object, r=None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.1 <= v <= 0.95:
        raise Invalid(f"must be a fraction of the lifetime from 0.1 to 0.95, got {show(v)}")
    return float(v)


_S = {"type": "string", "minLength": 1}
STR = Scalar("string", _str, _S)
TEXT = Scalar("string", _text, {"type": "string"})
DNS = Scalar("string", lambda v, r=None: _str(v).lower(), _S)
BOOL = Scalar("bool", _bool, {"type": "boolean"})
PORT = Scalar("port", _port, {"type": "integer", "minimum": 1, "maximum": 65535})
POS_INT = Scalar("int >= 1", _pos_int, {"type": "integer", "minimum": 1})
SECONDS = Scalar("seconds >= 0", _seconds, {"type": "number", "minimum": 0})
POS_SECONDS = Scalar("seconds > 0", _pos_seconds, {"type": "number", "exclusiveMinimum": 0})
SESSION_LIFETIME = Scalar(
    "seconds", _session_lifetime, {"type": "integer", "minimum": 0, "maximum": MAX_SESSION_LIFETIME}
)
IP = Scalar("IP", _ip, {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
DEVICE_IP = Scalar("IP or auto", _device_ip, {"type": "string"})
ROUTER = Scalar("IPv4", _ipv4_router, {"type": "string", "format": "ipv4"})
NTP_SERVER = Scalar("IPv4", _ntp_server, {"type": "string", "format": "ipv4"})
PREFIX = Scalar("1-31", _prefix_len, {"type": "integer", "minimum": 1, "maximum": 31})
PROFILE = Scalar("profile name", _profile, {"enum": list(PROFILES)})
MAC = Scalar("MAC", _mac, {"type": "string", "pattern": "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"})
SPKI = Scalar("hex", _spki, {"type": "string", "pattern": "^[0-9a-fA-F:]+$"})
SUBJECT = Scalar("DN", _subject, {"type": "string", "pattern": "="})
ENDPOINT = Scalar("HOST:PORT", parse_endpoint, {"type": "string", "pattern": ":[0-9]+$"})
FILE = Scalar("path", _file, _S)
PATH = Scalar("path", _path, _S)
SPOOL = Scalar("path or off", _spool, _S)
DATE = Scalar("date", _date, {"type": "string", "format": "date"})
HTTPS_URL = Scalar("URL", _https_url, {"type": "string", "pattern": "^https://"})
MAILTO = Scalar("URI", _mailto, {"type": "string", "pattern": "^mailto:"})
ENROLL_IP = Scalar("IP or device", _enroll_ip, {"type": "string"})
IPV4_NET = Scalar("IPv4 network", _ipv4_net, {"type": "string"})
FRACTION = Scalar("0.1-0.95", _fraction, {"type": "number", "minimum": 0.1, "maximum": 0.95})


def _http_url(v: object, r=None) -> str:
    s = _str(v)
    if not re.fullmatch(r"http://[^\s/?#@]+(/[^\s#]*)?", s, re.IGNORECASE):
        raise Invalid(f"must be an http:// URL of a CRL (no credentials, no https), got {show(v)}")
    return s


HTTP_URL = Scalar("http URL", _http_url, {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp]://"})
PROTOCOLS = ("tcp", "dicom", "hl7")


def _ae_title(v: object, r=None) -> str:
    # PS3.5 AE: 1-16 characters of the default repertoire, no backslash or control characters;
    # leading and trailing spaces are not significant.
    s = v.strip(" ") if isinstance(v, str) else v
    if not isinstance(s, str) or not 1 <= len(s) <= 16 or not s.isascii():
        raise Invalid(f"must be an AE title of 1 to 16 ASCII characters, got {show(v)}")
    if any(ch < " " or ch > "~" or ch == "\\" for ch in s):
        raise Invalid(f"an AE title holds no backslash or control character, got {show(v)}")
    return s


AE_TITLE = Scalar("AE title", _ae_title, {"type": "string", "minLength": 1, "maxLength": 16})
PROTOCOL = _choice(PROTOCOLS)


# --------------------------------------------------------------------------- structure


class Key:
    """One key of a mapping. `default` is in the file's terms (parsed like a configured value);
    `shown` replaces it in the docs when the default is another key (``port``, ``tls.profile``)."""

    __slots__ = ("default", "doc", "name", "required", "shown", "type")

    def __init__(self, name, type, doc, default=None, required=False, shown=None):
        self.name = name
        self.type = type
        self.doc = doc
        self.default = default
        self.required = required
        self.shown = shown


class Section:
    """A mapping with a fixed set of keys. An `optional` section that the file leaves out is
    None (its required keys are required only when it is written)."""

    __slots__ = ("keys", "optional", "required")

    def __init__(self, *keys: Key, optional: bool = False):
        self.keys = {k.name: k for k in keys}
        self.required = sorted(k.name for k in keys if k.required)
        self.optional = optional


class ListOf:
    """A list of `item` (a Section or a Scalar). `what` is the message for a non-list."""

    __slots__ = ("item", "nonempty", "what")

    def __init__(self, item, what: str = "must be a list, got {kind}", nonempty: bool = False):
        self.item = item
        self.what = what
        self.nonempty = nonempty


_VERIFY = Section(
    Key("ip", IP, "an IP address SAN of the peer's certificate"),
    Key("dns", DNS, "a DNS SAN (a *. wildcard covers one label)"),
    Key("cn", STR, "the subject common name, exact"),
    Key("subject", SUBJECT, "the whole subject DN, e.g. CN=pacs,O=Hospital"),
    Key("spki_sha256", SPKI, "SHA-256 of the DER SubjectPublicKeyInfo, 64 hex digits"),
    Key("ca", FILE, "per-peer CA bundle replacing trust.ca for this peer"),
)
VERIFY_IDS = ("ip", "dns", "cn", "subject", "spki_sha256")

_ALLOW = Section(
    Key("cn", STR, "subject common name, exact"),
    Key("dns", DNS, "a DNS SAN, exact"),
    Key("uri", STR, "a URI SAN"),
    Key("ip_san", IP, "an IP address SAN"),
    Key("subject", SUBJECT, "whole subject DN"),
    Key("spki_sha256", SPKI, "public key pin"),
    Key("ip", IP, "the client's source address (not a certificate field)"),
    Key(
        "calling_ae",
        ListOf(AE_TITLE, "must be a list of AE titles, got {kind}", nonempty=True),
        "protocol: dicom ports: calling AE titles this identity may use (others get an "
        "A-ASSOCIATE-RJ); unset: any",
    ),
)
ALLOW_IDS = ("cn", "dns", "uri", "ip_san", "subject", "spki_sha256")

_OUTBOUND = Section(
    Key("name", STR, "unique label used in logs, metrics and snapshot()", required=True),
    Key("address", IP, "the peer's address (the destination the device dials)", required=True),
    Key("port", PORT, "the port the device dials (required in transparent mode)"),
    Key("tls_port", PORT, "the port used on the LAN", shown="port"),
    Key("sni", STR, "SNI sent to the peer"),
    Key("verify", _VERIFY, "expected identity of the peer's certificate (unless plaintext)"),
    Key("plaintext", BOOL, "explicit plaintext pass-through to this destination", False),
    Key("profile", PROFILE, "per-peer TLS profile", shown="tls.profile"),
    Key("listen", ENDPOINT, "explicit mode only (required there): where the device connects"),
    Key("protocol", PROTOCOL, "what the device speaks: dicom/hl7 get refusals in it", "tcp"),
)

_INBOUND = Section(
    Key("name", STR, "unique label", required=True),
    Key("port", PORT, "TLS port LAN peers dial on the device's IP (transparent mode)"),
    Key("device_port", PORT, "plain port on the device", shown="port"),
    Key(
        "allow",
        ListOf(_ALLOW, "must be a non-empty list of allowed identities", nonempty=True),
        "admitted client identities",
        required=True,
    ),
    Key("ca", FILE, "per-port CA bundle for client certificates", shown="trust.ca"),
    Key("profile", PROFILE, "per-port TLS profile", shown="tls.profile"),
    Key("listen", ENDPOINT, "explicit mode only (required there): where LAN peers connect"),
    Key("protocol", PROTOCOL, "what the port carries: dicom/hl7 get refusals in it", "tcp"),
)

_LIMITS = Section(
    Key("max_connections", POS_INT, "concurrent connections per process", 1024),
    Key("max_handshakes", POS_INT, "inbound connections in their handshake per process", 256),
    Key("max_handshakes_per_source", POS_INT, "stalled handshakes per source address", 16),
    Key("handshake_timeout", SECONDS, "seconds for the TLS handshake (> 0)", 10),
    Key("connect_timeout", SECONDS, "seconds to connect to the peer or device (> 0)", 10),
    Key("idle_timeout", SECONDS, "seconds without traffic before closing; 0 = off", 0),
    Key("buffer_size", POS_INT, "bytes per read and per direction (>= 4096)", 262144),
    Key("drain_timeout", SECONDS, "seconds SIGTERM waits for established connections", 30),
    Key("keepalive", BOOL, "TCP keepalive on both legs", True),
)

_METRICS = Section(
    Key("enabled", BOOL, "serve Prometheus metrics", True),
    Key(
        "listen",
        ENDPOINT,
        "IP:PORT or [IPv6]:PORT of the /metrics endpoint",
        DEFAULT_METRICS_LISTEN,
    ),
)

_AUDIT = Section(
    Key("transport", _choice(AUDIT_TRANSPORTS), "where audit messages go", "local"),
    Key("host", TEXT, "audit record repository (required for tls)", ""),
    Key("port", PORT, "the repository's port (RFC 5425)", 6514),
    Key("ca", PATH, "CA of the repository's certificate (required for tls)", ""),
    Key("certificate", PATH, "client certificate for the repository (with key)", ""),
    Key("key", PATH, "key of the client certificate (with certificate)", ""),
    Key("server_name", TEXT, "expected name of the repository; empty: host", ""),
    Key("local_socket", PATH, "syslog socket of the local transport", "/dev/log"),
    Key("queue_size", POS_INT, "messages kept while the repository is unreachable", 10000),
    Key("source_id", TEXT, "AuditSourceID and syslog HOSTNAME; empty: host name", ""),
    Key("site_id", TEXT, "AuditEnterpriseSiteID", ""),
    Key("retry_interval", POS_SECONDS, "seconds between reconnect attempts", 5),
    Key("spool", SPOOL, "file for messages still queued at stop; empty: state directory; off", ""),
)

_CLOCK = Section(
    Key("require_sync", BOOL, "refuse certificate validation until the clock is synced", True),
    Key(
        "sync_file",
        PATH,
        "file present once the clock is synchronised",
        "/run/systemd/timesync/synchronized",
    ),
    Key("not_before", DATE, "an earlier clock is wrong whatever NTP says", "2025-01-01"),
)

_CONTROL = Section(
    Key(
        "socket", PATH, "control socket of medtls status and medtls reload", DEFAULT_CONTROL_SOCKET
    ),
    Key("watch_files", BOOL, "reload when the config or TLS material changes", True),
)

_ENROLLMENT = Section(
    Key(
        "acme",
        Section(
            Key("directory", HTTPS_URL, "the ACME directory URL of the CA", required=True),
            Key("ca", FILE, "CA bundle of the ACME server's HTTPS certificate", shown="trust.ca"),
            Key("eab_key_id", STR, "External Account Binding key id (with eab_hmac_key_file)"),
            Key(
                "eab_hmac_key_file",
                PATH,  # read by `medtls enroll` (root) only: the daemon's user must not read it
                "file holding the base64url EAB HMAC key; refused if group/other readable",
            ),
            Key(
                "contact",
                ListOf(MAILTO, "must be a list of mailto: URIs, got {kind}"),
                "account contact URIs",
                (),
            ),
        ),
        "the ACME server and the account",
        required=True,
    ),
    Key(
        "identifiers",
        Section(
            Key(
                "ip",
                ListOf(ENROLL_IP, "must be a list of IP addresses or device, got {kind}"),
                "IP identifiers (SANs); device: device.ip",
                ("device",),
                shown="[device]",
            ),
            Key(
                "dns", ListOf(DNS, "must be a list of DNS names, got {kind}"), "DNS identifiers", ()
            ),
        ),
        "the identifiers the certificate carries",
    ),
    Key(
        "challenges",
        ListOf(
            _choice(ACME_CHALLENGES), "must be a list of challenge types, got {kind}", nonempty=True
        ),
        "challenge types in preference order",
        ACME_CHALLENGES,
        shown="[tls-alpn-01, http-01]",
    ),
    Key(
        "validation_sources",
        ListOf(IPV4_NET, "must be a list of IPv4 addresses or networks, got {kind}"),
        "the CA's validation addresses (required in transparent mode)",
        (),
    ),
    Key(
        "state_dir",
        PATH,
        "enrollment state, account key and live certificate",
        DEFAULT_ENROLLMENT_STATE_DIR,
    ),
    Key("renew_at", FRACTION, "fraction of the lifetime after which renewal starts", 0.667),
    Key("key_type", _choice(KEY_TYPES), "type of the key generated for each order", "ec-p256"),
    optional=True,
)

_CRL_FETCH = Section(
    Key(
        "urls",
        ListOf(HTTP_URL, "must be a list of http:// URLs, got {kind}"),
        "CRLs to fetch; empty: the http CRL distribution points of identity and trust CAs",
        (),
    ),
    Key("interval", POS_SECONDS, "seconds between fetches (the timer's period)", 3600),
    Key("timeout", POS_SECONDS, "seconds one URL may take, connect to last byte", 10),
    Key("max_bytes", POS_INT, "largest CRL accepted, in bytes", 4194304),
    Key(
        "state_file",
        PATH,
        "JSON result of the last fetch (status)",
        DEFAULT_CRL_FETCH_STATE_FILE,
    ),
)

_LED = Section(
    Key("enabled", BOOL, "show the box's state on the board LED (medtls led)", True),
    Key(
        "names",
        ListOf(STR, "must be a list of LED names, got {kind}"),
        "LEDs under /sys/class/leds; the first present is used",
        ("ACT", "led0"),
    ),
    Key("interval", POS_SECONDS, "seconds between status polls", 2),
)

_LOG_SYSLOG = Section(
    Key(
        "transport",
        _choice(LOG_FORWARD_TRANSPORTS),
        "forward the operational log to a syslog server",
        "none",
    ),
    Key("host", TEXT, "the site's syslog server / SIEM (required unless none)", ""),
    Key("port", PORT, "its port: usually 514 (udp, tcp) or 6514 (tls)", 514),
    Key("ca", PATH, "CA of the server's certificate (required for tls)", ""),
    Key("certificate", PATH, "client certificate for the server (with key)", ""),
    Key("key", PATH, "key of the client certificate (with certificate)", ""),
    Key("server_name", TEXT, "expected name of the server; empty: host", ""),
    Key("queue_size", POS_INT, "messages kept while the server is unreachable", 1000),
    Key("retry_interval", POS_SECONDS, "seconds between reconnect attempts", 5),
)


def _gate_timeout(v: object, r=None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 30 <= v <= 3600:
        raise Invalid(f"must be 30 to 3600 seconds, got {show(v)}")
    return float(v)


_UPDATE = Section(
    Key(
        "gate_timeout",
        Scalar(
            "30-3600 seconds", _gate_timeout, {"type": "number", "minimum": 30, "maximum": 3600}
        ),
        "seconds after boot a freshly installed slot has to become healthy, else it falls back",
        300,
    ),
    Key("gate_probe", STR, "outbound peer name (or ADDRESS:PORT) the gate probes; absent: none"),
)

SCHEMA = Section(
    Key(
        "device",
        Section(
            Key("ip", DEVICE_IP, "the device's address, or auto (learned)", required=True),
            Key("mac", MAC, "the device's MAC address"),
            Key("prefix", PREFIX, "the device's IPv4 prefix length (with gateway)"),
            Key("gateway", ROUTER, "the device's router (with prefix)"),
        ),
        "the protected device",
        required=True,
    ),
    Key(
        "interfaces",
        Section(
            Key("device", STR, "port 1, cable to the device", "eth0"),
            Key("lan", STR, "port 2, cable to the LAN", "eth1"),
            Key("bridge", STR, "the bridge enslaving both", "br0"),
        ),
        "the box's ports",
    ),
    Key(
        "mode", _choice(MODES), "transparent (bridge) or explicit (listen addresses)", "transparent"
    ),
    Key(
        "interception",
        _choice(INTERCEPTIONS),
        "how intercepted flows reach the listeners",
        "tproxy",
    ),
    Key(
        "listeners",
        Section(
            Key("outbound", PORT, "port device -> LAN flows are delivered to", 15001),
            Key("inbound", PORT, "port LAN -> device flows are delivered to", 15002),
            Key("address", IP, "bind address of both listeners", "0.0.0.0"),
        ),
        "transparent mode: where intercepted flows are delivered",
    ),
    Key(
        "identity",
        Section(
            Key(
                "certificate",
                FILE,
                "PEM: the leaf followed by its intermediates (required without enrollment)",
                shown="enrollment.state_dir/live/fullchain.pem",
            ),
            Key(
                "key",
                FILE,
                "PEM private key (required without enrollment)",
                shown="enrollment.state_dir/live/key.pem",
            ),
            Key("key_passphrase_file", FILE, "file holding the key's passphrase"),
            Key("ca", FILE, "CA bundle of the box's own certificate, if not a peers' CA"),
        ),
        "certificate and key the box presents (required without enrollment)",
    ),
    Key(
        "trust",
        Section(
            Key("ca", FILE, "PEM bundle of the CAs peers must chain to", required=True),
            Key("crl", FILE, "PEM file of certificate revocation lists"),
            Key("crl_check", _choice(CRL_CHECKS), "leaf or the whole chain", "leaf"),
        ),
        "default CA bundle for verifying every peer",
        required=True,
    ),
    Key(
        "tls",
        Section(
            Key("profile", PROFILE, "default TLS profile", DEFAULT_PROFILE),
            Key(
                "session_lifetime",
                SESSION_LIFETIME,
                "seconds a TLS session may be resumed",
                DEFAULT_SESSION_LIFETIME,
            ),
        ),
        "default TLS profile, session resumption",
    ),
    Key("outbound", ListOf(_OUTBOUND), "device -> LAN peers", ()),
    Key("inbound", ListOf(_INBOUND), "LAN -> device TLS ports and their ACLs", ()),
    Key(
        "passthrough",
        Section(
            Key(
                "inbound_ports",
                ListOf(PORT, "must be a list of ports, got {kind}"),
                "plaintext LAN -> device ports let through",
                (),
            ),
        ),
        "plaintext LAN -> device ports",
    ),
    Key(
        "ntp",
        Section(
            Key(
                "servers",
                ListOf(NTP_SERVER, "must be a list of IPv4 addresses, got {kind}"),
                f"up to {NTP_MAX_SERVERS} IPv4 NTP servers reached as the device",
                (),
            ),
        ),
        "LAN NTP servers of the box's own clock",
    ),
    Key("limits", _LIMITS, "connection limits and timeouts"),
    Key(
        "logging",
        Section(
            Key("level", _choice(LOG_LEVELS), "log level", "info"),
            Key("syslog", _LOG_SYSLOG, "forward the operational log to the site's syslog/SIEM"),
        ),
        "logging",
    ),
    Key("workers", POS_INT, "relay processes sharing the listeners", 1),
    Key("metrics", _METRICS, "Prometheus endpoint"),
    Key("audit", _AUDIT, "IHE ATNA audit trail"),
    Key("clock", _CLOCK, "clock safety"),
    Key("control", _CONTROL, "control socket and file watching"),
    Key("enrollment", _ENROLLMENT, "ACME enrollment and renewal of the identity; absent: by hand"),
    Key("crl_fetch", _CRL_FETCH, "the box fetches trust.crl itself (absent: maintained by hand)"),
    Key("led", _LED, "board LED showing the box's state"),
    Key("update", _UPDATE, "A/B updates: the health gate after booting a new slot"),
)


def node(path: str):
    """The Key at a dotted path: ``limits.max_connections``, ``outbound.port`` (an item's)."""
    section, key = SCHEMA, None
    for name in path.split("."):
        key = section.keys[name]
        section = key.type.item if isinstance(key.type, ListOf) else key.type
    return key


def default(path: str):
    """The parsed default of a scalar key (what a file without the key gets)."""
    return Reader(None, False).default(node(path))


# --------------------------------------------------------------------------- the reader


class Values(dict):
    """A walked mapping: every key of its Section (parsed value or default); `present` holds the
    keys the file wrote (even as null), `given` those it wrote with a value."""

    present: frozenset = frozenset()
    given: frozenset = frozenset()


class Reader:
    """Walks raw YAML along the schema, collecting problems instead of stopping at the first."""

    def __init__(self, base_dir: Path | None, check_files: bool):
        self.problems: list[Problem] = []
        self.base_dir = base_dir
        self.check_files = check_files

    def err(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def section(self, section: Section, raw: object, path: str) -> Values | None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.err(path, f"must be a mapping, got {kind(raw)}")
            return None
        for k in raw:
            if k not in section.keys:
                where = f"{path}.{k}" if path else str(k)
                self.err(where, f"unknown key (allowed: {', '.join(sorted(section.keys))})")
        for k in section.required:
            if k not in raw:
                self.err(f"{path}.{k}" if path else k, "required key missing")
        out = Values()
        out.present = frozenset(k for k in raw if k in section.keys)
        out.given = frozenset(k for k in out.present if raw[k] is not None)
        for name, key in section.keys.items():
            out[name] = self.value(key, raw.get(name), f"{path}.{name}" if path else name)
        return out

    def value(self, key: Key, raw: object, path: str):
        t = key.type
        if isinstance(t, Section):
            return None if raw is None and t.optional else self.section(t, raw, path)
        if raw is None:
            return self.default(key)
        if isinstance(t, ListOf):
            return self.items(t, raw, path)
        try:
            return t.parse(raw, self)
        except Invalid as e:
            self.err(path, str(e))
            return self.default(key)

    def default(self, key: Key):
        if key.default is None or isinstance(key.type, ListOf):
            return key.default
        return key.type.parse(key.default, self)

    def items(self, t: ListOf, raw: object, path: str) -> list:
        """The list's items, None in place of each invalid one (indices stay the file's)."""
        if not isinstance(raw, list) or (t.nonempty and not raw):
            self.err(path, t.what.format(kind=kind(raw)))
            return []
        out = []
        for i, item in enumerate(raw):
            where = f"{path}[{i}]"
            if isinstance(t.item, Section):
                out.append(self.section(t.item, item, where))
                continue
            try:
                out.append(t.item.parse(item, self))
            except Invalid as e:
                self.err(where, str(e))
                out.append(None)
        return out


# --------------------------------------------------------------------------- JSON Schema


def _json_default(key: Key):
    d = key.default
    return list(d) if isinstance(d, tuple) else d


def _json(t, doc: str = "") -> dict:
    if isinstance(t, Section):
        out = {"type": "object", "additionalProperties": False, "properties": {}}
        for key in t.keys.values():
            prop = _json(key.type, key.doc)
            if key.default is not None and not isinstance(key.type, Section):
                prop["default"] = _json_default(key)
            out["properties"][key.name] = prop
        if t.required:
            out["required"] = list(t.required)
    elif isinstance(t, ListOf):
        out = {"type": "array", "items": _json(t.item)}
        if t.nonempty:
            out["minItems"] = 1
    else:
        out = dict(t.json)
    if doc:
        out = {"description": doc, **out}
    return out


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a medtls.yaml, generated from SCHEMA."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "medtls configuration (medtls.yaml)",
        "description": "Generated by python -m medtls.config --json; see docs/configuration.md"
        ". Cross-key rules (a port required in transparent mode, duplicates) are checked by medtls"
        " check only.",
        **_json(SCHEMA),
    }


def json_text() -> str:
    import json

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
