"""The box keeps trust.crl current: fetch, check, merge, validate, install, reload.

A fetched CRL replaces the installed CRL of its CA only when it is well-formed (our strict parser,
then cryptography), signed by that CA, fresh (thisUpdate not in the future, nextUpdate in the
future), complete (no delta CRL) and not older than the installed one; the merged bundle then
passes the ONE validation (`tls.material.validate`) as a candidate configuration before it is
renamed over trust.crl. A CA whose fetch fails keeps its current CRL. `judge` and `merge` are the
decisions, pure; the rest is I/O. Runs in its own process (cryptography, requests), never in the
serving daemon.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from medtls.config import Config
from medtls.core.certparse import CertParseError, pem_certificates
from medtls.core.crlparse import crl_blocks, parse_crl
from medtls.core.crlstate import CrlFetchState, UrlResult, write_state
from medtls.enroll.x509read import utc

# A CA's clock may run a little ahead of ours: a CRL issued "in the future" by less than this is
# not refused (a larger gap is a wrong clock on one side, or a forged date).
CLOCK_SKEW = 300.0


class CrlRejected(Exception):
    """A fetched CRL that must not be installed; the message says why."""


@dataclass(frozen=True)
class CrlMeta:
    """What the decisions need of one CRL."""

    ca: str  # the CA it belongs to: issuer name + SHA-256 of the verifying CA key
    issuer: str  # for messages
    number: int | None  # cRLNumber
    this_update: float
    next_update: float | None
    der: bytes


# --------------------------------------------------------------------------- decisions (pure)


def judge(new: CrlMeta, current: CrlMeta | None, now: float) -> str | None:
    """None if `new` may replace `current` (the installed CRL of the same CA); else why not."""
    if new.this_update > now + CLOCK_SKEW:
        return f"thisUpdate {_when(new.this_update)} is in the future"
    if new.next_update is None:
        return "no nextUpdate: its freshness cannot be judged"
    if new.next_update <= now:
        return f"stale: its nextUpdate {_when(new.next_update)} has passed"
    if new.next_update < new.this_update:
        return "nextUpdate before thisUpdate"
    if current is None:
        return None
    if current.number is not None:
        if new.number is None:
            return f"no CRL number, the installed CRL has number {current.number}"
        if new.number < current.number:
            return f"rollback: CRL number {new.number} is lower than the installed {current.number}"
        if new.number == current.number and new.der != current.der:
            return f"CRL number {new.number} is the installed one's, with other content"
    if new.this_update < current.this_update:
        return (
            f"rollback: thisUpdate {_when(new.this_update)} is older than the installed "
            f"{_when(current.this_update)}"
        )
    return None


def merge(current: list[CrlMeta], accepted: list[CrlMeta]) -> list[CrlMeta]:
    """The new bundle: the installed CRLs in their order, each CA's replaced by its accepted
    new CRL (one per CA), then accepted CRLs of CAs that had none."""
    new = {}
    for meta in accepted:
        new.setdefault(meta.ca, meta)
    out, placed = [], set()
    for meta in current:
        if meta.ca in new:
            if meta.ca not in placed:
                out.append(new[meta.ca])
                placed.add(meta.ca)
        else:
            out.append(meta)
    out += [m for ca, m in new.items() if ca not in placed]
    return out


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# --------------------------------------------------------------------------- reading CRLs


def _timestamp(crl, name: str) -> float | None:
    value = utc(crl, name)
    return None if value is None else value.timestamp()


def one_der(body: bytes) -> bytes:
    """The DER of the one CRL in a fetched body (DER, or a PEM file with exactly one CRL)."""
    if body[:64].lstrip().startswith(b"-----"):
        try:
            blocks = crl_blocks(body)
        except ValueError as e:
            raise CrlRejected(f"not a PEM CRL: {e}") from None
        if len(blocks) != 1:
            raise CrlRejected(f"{len(blocks)} CRLs in one response; one URL serves one CRL")
        return blocks[0].der
    return body


def examine(der: bytes, cas: list) -> CrlMeta:
    """CrlMeta of one DER CRL signed by one of `cas` (cryptography certificates); CrlRejected."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        parse_crl(der)  # the strict reader first: it refuses trailing bytes and truncation
    except CertParseError as e:
        raise CrlRejected(f"malformed or truncated CRL: {e}") from None
    try:
        crl = x509.load_der_x509_crl(der)
        issuer = crl.issuer.rfc4514_string()
    except ValueError as e:
        raise CrlRejected(f"malformed CRL: {e}") from None
    exts = crl.extensions
    with contextlib.suppress(x509.ExtensionNotFound):
        exts.get_extension_for_class(x509.DeltaCRLIndicator)
        raise CrlRejected(f"a delta CRL of {issuer}; only complete CRLs are installed")
    signer = None
    for ca in cas:
        if ca.subject != crl.issuer:
            continue
        with contextlib.suppress(Exception):  # unsupported key types count as not signed
            if crl.is_signature_valid(ca.public_key()):
                signer = ca
                break
    if signer is None:
        known = any(ca.subject == crl.issuer for ca in cas)
        raise CrlRejected(
            f"signature of {issuer} does not verify with its CA"
            if known
            else f"issuer {issuer} is none of the configured CAs"
        )
    try:
        number = exts.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    spki = signer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    this_update = _timestamp(crl, "last_update")
    return CrlMeta(
        f"{issuer}#{hashlib.sha256(spki).hexdigest()[:16]}", issuer, number,
        this_update, _timestamp(crl, "next_update"), der,
    )  # fmt: skip


def _certificates(path: Path | None) -> list:
    from cryptography import x509

    if path is None:
        return []
    try:
        ders = pem_certificates(path.read_bytes())
    except (OSError, ValueError):
        return []  # the configuration's own check reports unreadable material
    out = []
    for der in ders:
        with contextlib.suppress(ValueError):
            out.append(x509.load_der_x509_certificate(der))
    return out


def _config_certificates(cfg: Config) -> list:
    """identity.certificate (leaf and intermediates), identity.ca, trust.ca and the route CAs."""
    paths = [cfg.identity.certificate, cfg.identity.ca, cfg.trust_ca]
    paths += [p.verify.ca for p in cfg.outbound if p.verify and p.verify.ca]
    paths += [p.ca for p in cfg.inbound if p.ca]
    certs, seen = [], set()
    for path in dict.fromkeys(p for p in paths if p is not None):
        for cert in _certificates(path):
            fp = cert.fingerprint(_sha256())
            if fp not in seen:
                seen.add(fp)
                certs.append(cert)
    return certs


def _sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


def signing_cas(cfg: Config) -> list:
    """Every CA certificate the configuration names (CRLs of these may be installed)."""
    from cryptography import x509

    out = []
    for cert in _config_certificates(cfg):
        try:
            if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                out.append(cert)
        except (x509.ExtensionNotFound, ValueError):
            continue
    return out


def distribution_points(cfg: Config) -> list[str]:
    """The http:// CRL distribution points of the configuration's certificates, in order."""
    from cryptography import x509

    urls: list[str] = []
    for cert in _config_certificates(cfg):
        try:
            points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        except (x509.ExtensionNotFound, ValueError):
            continue
        for point in points:
            for name in point.full_name or ():
                if isinstance(name, x509.UniformResourceIdentifier):
                    url = name.value
                    if url.lower().startswith("http://") and url not in urls:
                        urls.append(url)
    return urls


def installed(cfg: Config, cas: list) -> list[CrlMeta]:
    """The CRLs of the current trust.crl; one a CA no longer verifies is kept as it is."""
    try:
        blocks = crl_blocks(cfg.trust_crl.read_bytes())
    except (OSError, ValueError):
        return []  # missing or broken: any good fetched CRL is better
    out = []
    for block in blocks:
        try:
            out.append(examine(block.der, cas))
        except CrlRejected:
            digest = hashlib.sha256(block.der).hexdigest()
            out.append(CrlMeta(f"unverified#{digest}", "?", None, 0.0, None, block.der))
    return out


# --------------------------------------------------------------------------- fetching


def fetch(session, url: str, max_bytes: int, timeout: float) -> bytes:
    """The body at `url`, at most `max_bytes`, within `timeout` seconds in all; CrlRejected."""
    import requests

    deadline = time.monotonic() + timeout
    try:
        with session.get(url, stream=True, timeout=timeout, allow_redirects=False) as r:
            if r.status_code != 200:
                raise CrlRejected(f"HTTP {r.status_code}")
            declared = r.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise CrlRejected(f"larger than crl_fetch.max_bytes ({declared} > {max_bytes})")
            body = bytearray()
            for chunk in r.iter_content(65536):
                body += chunk
                if len(body) > max_bytes:
                    raise CrlRejected(f"larger than crl_fetch.max_bytes ({max_bytes})")
                if time.monotonic() > deadline:
                    raise CrlRejected(f"took longer than crl_fetch.timeout ({timeout:g}s)")
            if declared and declared.isdigit() and int(declared) != len(body):
                raise CrlRejected(f"truncated: {len(body)} of {declared} bytes")
            return bytes(body)
    except requests.exceptions.ChunkedEncodingError:
        raise CrlRejected("cannot fetch: truncated transfer (connection closed early)") from None
    except requests.RequestException as e:
        raise CrlRejected(f"cannot fetch: {e.__class__.__name__}: {_short(e)}") from None


def _short(e: Exception) -> str:
    text = str(e)
    return text if len(text) <= 200 else text[:200] + "..."


# --------------------------------------------------------------------------- installing


def pem_bundle(crls: list[CrlMeta]) -> bytes:
    import base64

    out = []
    for meta in crls:
        b64 = base64.encodebytes(meta.der).replace(b"\n", b"")
        lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
        out.append(
            b"-----BEGIN X509 CRL-----\n" + b"\n".join(lines) + b"\n-----END X509 CRL-----\n"
        )
    return b"".join(out)


def install(cfg: Config, bundle: bytes) -> None:
    """Validate `bundle` as trust.crl of a candidate configuration, then rename it into place.

    TLSSetupError (from the one validation) leaves trust.crl untouched."""
    from medtls.tls.material import validate

    target = cfg.trust_crl
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(bundle)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        validate(dataclasses.replace(cfg, trust_crl=Path(tmp)))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dirfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


# --------------------------------------------------------------------------- one run


def device_source(cfg: Config) -> str | None:
    """The address the fetcher speaks from: the device's IP in transparent mode."""
    return cfg.device.ip if cfg.mode == "transparent" else None


def fetch_once(cfg: Config, now: float | None = None, session=None) -> CrlFetchState:
    """Fetch every URL, install what passed, reload, write and return the state."""
    from medtls.enroll.install import notify_daemon
    from medtls.enroll.transport import session_as
    from medtls.tls.context import TLSSetupError

    fc = cfg.crl_fetch
    now = time.time() if now is None else now
    urls = list(fc.urls) or distribution_points(cfg)
    errors: list[str] = []
    if not urls:
        errors.append("no URL: crl_fetch.urls is empty and no certificate names an http CRL "
                      "distribution point")  # fmt: skip
    cas = signing_cas(cfg)
    current = installed(cfg, cas)
    by_ca = {m.ca: m for m in current}
    if session is None:
        session = session_as(device_source(cfg), None, fc.timeout)
    results: list[UrlResult] = []
    accepted: list[CrlMeta] = []
    for url in urls:
        try:
            meta = examine(one_der(fetch(session, url, fc.max_bytes, fc.timeout)), cas)
        except CrlRejected as e:
            failed = str(e).startswith(("cannot fetch", "HTTP "))
            results.append(UrlResult(url, "failed" if failed else "refused", str(e)))
            continue
        if any(m.ca == meta.ca for m in accepted):
            results.append(UrlResult(url, "refused", f"a second CRL of {meta.issuer} this run",
                                     meta.next_update))  # fmt: skip
            continue
        old = by_ca.get(meta.ca)
        if old is not None and old.der == meta.der:
            results.append(UrlResult(url, "unchanged", meta.issuer, meta.next_update))
            continue
        why = judge(meta, old, now)
        if why:
            results.append(UrlResult(url, "refused", why, meta.next_update))
            continue
        accepted.append(meta)
        results.append(UrlResult(url, "installed", meta.issuer, meta.next_update))
    bundle = current
    reload = ""
    if accepted:
        bundle = merge(current, accepted)
        try:
            install(cfg, pem_bundle(bundle))
            reload = notify_daemon(cfg)
        except (TLSSetupError, OSError) as e:
            errors.append(f"new trust.crl refused, the installed one stays: {e}")
            results = [
                dataclasses.replace(r, result="refused", detail=f"bundle refused: {r.detail}")
                if r.result == "installed"
                else r
                for r in results
            ]
            bundle = current
    due = [m.next_update for m in bundle if m.next_update is not None]
    state = CrlFetchState(now, tuple(results), min(due) if due else None, reload, tuple(errors))
    write_state(fc.state_file, state)
    return state
