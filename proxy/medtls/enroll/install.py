"""Check an issued certificate, install it atomically, tell the daemon (enroll process only).

`check_issued` runs the ONE validation of TLS material (`tls.material.validate`) on a candidate
configuration whose identity is a temporary copy of the new key and chain, after the checks that
are specific to an issued certificate (key match, EKUs the routes need, identifiers, validity).
`install` writes a new generation directory under ``<state_dir>`` and swaps the ``live`` symlink
to it with one rename, so a reader resolving ``live`` once (the daemon does, see
`tls.material.pinned_identity`) sees the old pair or the new pair, never a mix. `notify_daemon`
sends the same reload as `medtls reload`.

Runs under Debian's /usr/bin/python3 (3.11, cryptography 38) as well as the venv.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from medtls.config import Config
from medtls.enroll.x509read import load_pem_certificates, utc
from medtls.ops import control
from medtls.tls.context import TLSSetupError
from medtls.tls.material import validate

KEEP_GENERATIONS = 2
GENERATION_PREFIX = "gen-"
# An issued certificate may start a little in the future (CA clock ahead of ours).
NOT_BEFORE_SLACK = 300


class IssuedCertificateRejected(Exception):
    """The issued chain must not be installed; the message says why."""


def load_chain(chain_pem: bytes) -> list[x509.Certificate]:
    try:
        certs = load_pem_certificates(chain_pem)
    except ValueError as e:
        raise IssuedCertificateRejected(f"the issued chain is not PEM certificates: {e}") from None
    if not certs:
        raise IssuedCertificateRejected("the issued chain holds no certificate")
    return certs


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


def _public_der(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _needed_ekus(cfg: Config) -> list[tuple[object, str]]:
    out = []
    if any(not p.plaintext for p in cfg.outbound):
        out.append((ExtendedKeyUsageOID.CLIENT_AUTH, "clientAuth (outbound TLS routes)"))
    if cfg.inbound:
        out.append((ExtendedKeyUsageOID.SERVER_AUTH, "serverAuth (inbound TLS ports)"))
    return out


def check_leaf(cfg: Config, key_pem: bytes, leaf: x509.Certificate, now: datetime) -> None:
    """The checks specific to an issued certificate; IssuedCertificateRejected names the first
    problem."""
    serial = serial_hex(leaf)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise IssuedCertificateRejected(f"the order's key cannot be read: {e}") from None
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise IssuedCertificateRejected(
            f"certificate {serial}: its public key is not the key generated for this order"
        )
    not_after, not_before = utc(leaf, "not_valid_after"), utc(leaf, "not_valid_before")
    if not_after <= now:
        raise IssuedCertificateRejected(
            f"certificate {serial}: expired on {not_after:%Y-%m-%dT%H:%M:%SZ}"
        )
    if (not_before - now).total_seconds() > NOT_BEFORE_SLACK:
        raise IssuedCertificateRejected(
            f"certificate {serial}: not valid until {not_before:%Y-%m-%dT%H:%M:%SZ}"
        )
    try:
        ekus = list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = None  # no EKU extension: valid for every purpose (as material.validate reads it)
    if ekus is not None:
        for oid, what in _needed_ekus(cfg):
            if oid not in ekus:
                raise IssuedCertificateRejected(
                    f"certificate {serial}: extended key usage lacks {what}"
                )
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
        names = {d.lower() for d in san.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        ips, names = set(), set()
    enrollment = cfg.enrollment
    wanted_ips = enrollment.ips if enrollment else ()
    wanted_dns = enrollment.dns if enrollment else ()
    for ip in wanted_ips:
        if str(ipaddress.ip_address(ip)) not in ips:
            raise IssuedCertificateRejected(f"certificate {serial}: IP SAN {ip} missing")
    for name in wanted_dns:
        if name.lower() not in names:
            raise IssuedCertificateRejected(f"certificate {serial}: DNS SAN {name} missing")


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _candidate(cfg: Config, directory: Path) -> Config:
    return replace(
        cfg,
        identity=replace(
            cfg.identity, certificate=directory / "fullchain.pem", key=directory / "key.pem"
        ),
    )


def check_issued(cfg: Config, key_pem: bytes, chain_pem: bytes, now: datetime | None = None):
    """Raise IssuedCertificateRejected unless `chain_pem` (leaf first) with `key_pem` is an
    identity the daemon would accept and that carries what the enrollment asked for."""
    now = now or datetime.now(UTC)
    certs = load_chain(chain_pem)
    check_leaf(cfg, key_pem, certs[0], now)
    with tempfile.TemporaryDirectory(prefix="medtls-issued-") as tmp:
        d = Path(tmp)
        _write(d / "fullchain.pem", chain_pem, 0o600)
        _write(d / "key.pem", key_pem, 0o600)
        try:
            validate(_candidate(cfg, d))
        except TLSSetupError as e:
            text = str(e).replace(str(d) + "/", "")
            raise IssuedCertificateRejected(
                f"certificate {serial_hex(certs[0])}: refused by the identity validation: {text}"
            ) from None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def generations(state_dir: Path) -> list[Path]:
    """Generation directories, oldest first."""
    return sorted(p for p in state_dir.glob(GENERATION_PREFIX + "*") if p.is_dir())


def install(cfg: Config, key_pem: bytes, chain_pem: bytes) -> Path:
    """Write the pair to a new generation directory and point ``live`` at it with one rename;
    keep the newest KEEP_GENERATIONS generations. Returns the new generation directory. Key and
    generation directory get the group of state_dir (the daemon's group) and no other access."""
    state_dir = cfg.enrollment.state_dir
    live = cfg.enrollment.live_dir
    if live.exists() and not live.is_symlink():
        raise OSError(f"{live} exists and is not a symlink: move it away (enrollment owns it)")
    serial = serial_hex(load_chain(chain_pem)[0])[:16]
    # Nanoseconds in the name: generations sort by install time even within one second.
    now_ns = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now_ns // 10**9)) + f".{now_ns % 10**9:09d}"
    gen = state_dir / f"{GENERATION_PREFIX}{stamp}-{serial}"
    n = 0
    while gen.exists():
        n += 1
        gen = state_dir / f"{GENERATION_PREFIX}{stamp}-{serial}.{n}"
    tmp_gen = state_dir / f".tmp-{gen.name}"
    shutil.rmtree(tmp_gen, ignore_errors=True)
    os.mkdir(tmp_gen, 0o750)
    try:
        group = state_dir.stat().st_gid
        _write(tmp_gen / "key.pem", key_pem, 0o640)
        _write(tmp_gen / "fullchain.pem", chain_pem, 0o644)
        if os.getuid() == 0 or group in os.getgroups():
            for p in (tmp_gen, tmp_gen / "key.pem", tmp_gen / "fullchain.pem"):
                os.chown(p, -1, group)
        _fsync_dir(tmp_gen)
        os.rename(tmp_gen, gen)
    except BaseException:
        shutil.rmtree(tmp_gen, ignore_errors=True)
        raise
    link_tmp = state_dir / f".live.{os.getpid()}.tmp"
    link_tmp.unlink(missing_ok=True)
    os.symlink(gen.name, link_tmp)
    os.replace(link_tmp, live)
    _fsync_dir(state_dir)
    for old in generations(state_dir)[:-KEEP_GENERATIONS]:
        if old != gen:
            shutil.rmtree(old, ignore_errors=True)
    return gen


def notify_daemon(cfg: Config, timeout: float = 30.0) -> str:
    """Ask a running daemon to reload (as `medtls reload` does). A daemon that is not running
    is not an error (it loads the new certificate when it starts); a refused reload is reported
    in the returned text (the daemon keeps its generation)."""
    path = cfg.ops.control.socket
    if not control.answering(path):
        return "not running"
    try:
        reply = control.request(path, "reload", timeout=timeout)
    except control.ControlError as e:
        return f"reload not confirmed: {e}"
    if reply.get("ok"):
        return f"reloaded: generation {reply.get('generation')}"
    return f"reload refused: {reply.get('error')}"
