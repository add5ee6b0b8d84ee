"""One enrollment run (`medtls enroll`, started by medtls-enroll.timer): decide whether a
certificate is due; if so: fresh key + CSR, open the validation window, answer the challenges,
order, check the issued chain with the one validation, install it atomically, ask the daemon to
reload, record the state. Any failure ends in a state naming it (last_error) with the next
attempt backed off; the installed certificate is never touched by a failed run."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import random
import time
from dataclasses import replace
from pathlib import Path

from medtls.core.enrollment import (
    EnrollmentState,
    StateFileError,
    current_phase,
    decide,
    failed,
    read_state,
    succeeded,
    write_state,
)

NETWORK_TIMEOUT = 30.0  # seconds for each request to the CA
ORDER_TIMEOUT = 120.0  # seconds for the whole order, validation included
EXPLICIT_TLS_PORT, EXPLICIT_HTTP_PORT = 443, 80


class EnrollConfigError(Exception):
    """The configuration does not allow an enrollment run (exit code 2)."""


class EnrollFailed(Exception):
    """A step of the run failed; str() is the operator's one line."""


def read_eab(enrollment) -> tuple[str, str] | None:
    """(kid, base64url HMAC key) from the configuration, or None without EAB."""
    acme = enrollment.acme
    if acme.eab_key_id is None or acme.eab_hmac_key_file is None:
        return None
    path = Path(acme.eab_hmac_key_file)
    where = f"enrollment.acme.eab_hmac_key_file: {path}"
    try:
        st = path.stat()
        if st.st_mode & 0o077:
            raise EnrollConfigError(
                f"{where} is readable or writable by group/other (mode "
                f"{st.st_mode & 0o777:o}): chmod 600 it"
            )
        with open(path, "rb") as fh:
            raw = fh.read(4097)
    except OSError as e:
        raise EnrollConfigError(f"{where}: cannot read: {e.strerror or e}") from None
    text = raw.decode("ascii", "replace").strip()
    if len(raw) > 4096 or not text:
        raise EnrollConfigError(f"{where}: must hold one base64url HMAC key")
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        key = b""
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")
    if not key or not set(text) <= allowed:
        raise EnrollConfigError(f"{where}: not a base64url HMAC key")
    return acme.eab_key_id, text.rstrip("=")


def responder_binds(cfg) -> tuple[tuple[str, int] | None, tuple[str, int] | None, bool]:
    """(tls-alpn-01 bind, http-01 bind, transparent) for the configured challenge types:
    transparent mode listens on the device's address at the ports the validation window steers
    to; explicit mode on the box's own address (the first IP identifier) at 443/80."""
    from medtls.interception.spec import ACME_HTTP_PORT, ACME_TLS_ALPN_PORT

    e = cfg.enrollment
    if cfg.mode == "transparent":
        host, ports, transparent = cfg.device.ip, (ACME_TLS_ALPN_PORT, ACME_HTTP_PORT), True
        if host is None:
            raise EnrollConfigError("enrollment needs device.ip in transparent mode")
    else:
        host = e.ips[0] if e.ips else "0.0.0.0"
        ports, transparent = (EXPLICIT_TLS_PORT, EXPLICIT_HTTP_PORT), False
    tls = (host, ports[0]) if "tls-alpn-01" in e.challenges else None
    http = (host, ports[1]) if "http-01" in e.challenges else None
    return tls, http, transparent


def leaf_facts(chain_pem: bytes) -> tuple[str, float, float]:
    """(serial hex, not_before, not_after) of the first certificate of a chain."""
    from cryptography import x509

    from medtls.enroll.x509read import utc

    cert = x509.load_pem_x509_certificate(chain_pem)
    return (
        format(cert.serial_number, "x"),
        utc(cert, "not_valid_before").timestamp(),
        utc(cert, "not_valid_after").timestamp(),
    )


@contextlib.contextmanager
def _run_lock(state_dir: Path):
    """One run at a time (the timer and an operator's `medtls enroll --force`)."""
    fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EnrollFailed("another enrollment run is in progress") from None
        yield
    finally:
        os.close(fd)


def _order(cfg, key_pem: bytes, eab) -> bytes:
    from medtls.enroll import acme, challenges, keys, transport
    from medtls.interception import validation_window

    e = cfg.enrollment
    csr = keys.make_csr(key_pem, list(e.ips), list(e.dns))
    ca_file = str(e.acme.ca) if e.acme.ca else None
    device_ip = cfg.device.ip if cfg.mode == "transparent" else None
    session = transport.session_as(device_ip, ca_file, NETWORK_TIMEOUT)
    tls_bind, http_bind, transparent = responder_binds(cfg)
    with (
        validation_window(cfg),
        challenges.ChallengeResponder(tls_bind, http_bind, transparent) as responder,
    ):
        return acme.obtain(
            e.acme.directory,
            ca_file,
            eab,
            e.state_dir / "account.key",
            csr,
            e.challenges,
            responder,
            session,
            e.acme.contact,
            ORDER_TIMEOUT,
        )


def _ari(cfg, chain_pem: bytes):
    from medtls.enroll import acme, transport

    e = cfg.enrollment
    ca_file = str(e.acme.ca) if e.acme.ca else None
    device_ip = cfg.device.ip if cfg.mode == "transparent" else None
    try:
        session = transport.session_as(device_ip, ca_file, NETWORK_TIMEOUT)
        return acme.renewal_info(e.acme.directory, ca_file, chain_pem, session)
    except acme.AcmeError:
        return None  # ARI is advice: without it, renewal follows renew_at


def _attempt(cfg, eab, log) -> tuple[bytes, str]:
    """key + CSR -> order -> check -> install -> reload; (chain, what the daemon said)."""
    from medtls.enroll import acme, challenges, install, keys
    from medtls.interception.spec import InterceptionError

    e = cfg.enrollment
    try:
        key_pem = keys.new_key(e.key_type)
        chain = _order(cfg, key_pem, eab)
    except (acme.AcmeError, challenges.ResponderError) as err:
        raise EnrollFailed(str(err)) from None
    except InterceptionError as err:
        raise EnrollFailed(f"validation window: {err}") from None
    try:
        install.check_issued(cfg, key_pem, chain)
    except install.IssuedCertificateRejected as err:
        raise EnrollFailed(f"issued certificate rejected: {err}") from None
    try:
        where = install.install(cfg, key_pem, chain)
    except OSError as err:
        raise EnrollFailed(f"install: {err.strerror or err}") from None
    log(f"installed {where}")
    return chain, install.notify_daemon(cfg)


def enroll_once(cfg, now: float | None = None, force: bool = False, rng=None, log=None):
    """One run; the state it leaves (also written to <state_dir>/state.json)."""
    e = cfg.enrollment
    if e is None:
        raise EnrollConfigError("no enrollment section: the identity is issued by hand")
    rng = rng or random.SystemRandom()
    log = log or (lambda _msg: None)
    eab = read_eab(e)
    try:
        e.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as err:
        raise EnrollConfigError(f"enrollment.state_dir: {e.state_dir}: {err.strerror}") from None
    with _run_lock(e.state_dir):
        now = time.time() if now is None else float(now)
        try:
            state = read_state(e.state_path)
        except StateFileError as err:
            log(f"starting over: {err}")
            state = None
        has_cert = e.certificate_path.is_file() and e.key_path.is_file()
        decision = decide(state, now, has_cert)
        log(f"{decision.action}: {decision.reason}")
        if decision.action == "wait" and not force:
            assert state is not None
            return replace(state, phase=current_phase(state, now))
        begun = state or EnrollmentState()
        write_state(e.state_path, replace(begun, phase=_running_phase(begun, has_cert)))
        try:
            chain, reloaded = _attempt(cfg, eab, log)
        except EnrollFailed as err:
            new = failed(state, now, str(err), rng)
            write_state(e.state_path, new)
            return new
        log(f"daemon: {reloaded}")
        serial, not_before, not_after = leaf_facts(chain)
        window = _ari(cfg, chain)
        new = succeeded(now, serial, not_before, not_after, e.renew_at, window, rng)
        write_state(e.state_path, new)
        return new


def _running_phase(state: EnrollmentState, has_cert: bool) -> str:
    return "renewing" if has_cert and state.serial is not None else "enrolling"
