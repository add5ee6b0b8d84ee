"""The box's ACME client (RFC 8555) on Debian's python3-acme: account with External Account
Binding (§7.3.4), an order for the CSR's identifiers (IP identifiers, RFC 8738; DNS names),
challenges in the configured preference order answered by a ChallengeResponder, bounded polling,
finalization and the full chain; ACME Renewal Information (RFC 9773) when the CA offers it.

Every failure is an AcmeError naming the step and, when the CA sent one, its problem document
(type and detail): one line for the operator, never a traceback. `acme`/`josepy` are imported
only when a network step runs, so the parsers here load anywhere.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

SUPPORTED_CHALLENGES = ("tls-alpn-01", "http-01")
# A renewalInfo answer is a small JSON object; anything bigger is not read.
MAX_RENEWAL_INFO_BYTES = 16384
# The CA's problem detail is shown to the operator in one line; a hostile CA must not flood it.
MAX_DETAIL_CHARS = 300
DEFAULT_ORDER_TIMEOUT = 90.0


class AcmeError(Exception):
    """One step of an order failed; str() is the one line the operator sees."""

    def __init__(self, step: str, problem: str):
        super().__init__(f"acme {step}: {problem}")
        self.step = step
        self.problem = problem


class Responder(Protocol):
    """What obtain() needs from the challenge responder (enroll/challenges.py)."""

    def serves(self, challenge_type: str) -> bool: ...

    def expect(
        self, challenge_type: str, ident_type: str, ident_value: str, token: str, key_auth: str
    ) -> None: ...


# ---------------------------------------------------------------- pure helpers


def one_line(text: object, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text` as one printable line of at most `limit` characters."""
    s = " ".join(str(text).split())
    s = "".join(c if c.isprintable() else "?" for c in s)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def describe_problem(typ: object, detail: object) -> str:
    """RFC 7807 problem document as the operator reads it: `detail (type)`."""
    typ_s = one_line(typ or "", 120).removeprefix("urn:ietf:params:acme:error:")
    detail_s = one_line(detail or "no detail")
    return f"{detail_s} ({typ_s})" if typ_s else detail_s


def choose_challenge(offered: Sequence[str], preference: Sequence[str], serves) -> str | None:
    """The first challenge type of `preference` that the CA offers and the responder serves."""
    for typ in preference:
        if typ in SUPPORTED_CHALLENGES and typ in offered and serves(typ):
            return typ
    return None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ari_cert_id(authority_key_id: bytes, serial: int) -> str:
    """RFC 9773 §4.1 certID: base64url(AKI keyIdentifier) '.' base64url(serial DER INTEGER
    content octets, i.e. two's complement with a leading zero when the top bit is set)."""
    if serial < 0:
        raise ValueError("negative serial number")
    length = serial.bit_length() // 8 + 1
    return f"{_b64url(authority_key_id)}.{_b64url(serial.to_bytes(length, 'big'))}"


class RenewalInfoError(ValueError):
    pass


def _rfc3339(value: object, where: str) -> float:
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        raise RenewalInfoError(f"{where} is not an RFC 3339 timestamp")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    if "T" not in text.upper():
        raise RenewalInfoError(f"{where} is not an RFC 3339 timestamp")
    text = text[:10] + "T" + text[11:]
    # Fractions beyond microseconds are legal in RFC 3339 but not for fromisoformat (3.11).
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0:
            raise RenewalInfoError(f"{where} is not an RFC 3339 timestamp")
        text = head + "." + rest[: min(digits, 6)].ljust(6, "0") + rest[digits:]
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise RenewalInfoError(f"{where} is not an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise RenewalInfoError(f"{where} has no time zone offset")
    return when.timestamp()


def parse_renewal_info(body: bytes) -> tuple[float, float]:
    """The suggested renewal window (start, end) in epoch seconds of an RFC 9773 renewalInfo
    response; RenewalInfoError names what is wrong with anything else."""
    if len(body) > MAX_RENEWAL_INFO_BYTES:
        raise RenewalInfoError(f"response larger than {MAX_RENEWAL_INFO_BYTES} bytes")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RenewalInfoError("response is not JSON") from None
    if not isinstance(doc, dict):
        raise RenewalInfoError("response is not a JSON object")
    window = doc.get("suggestedWindow")
    if not isinstance(window, dict):
        raise RenewalInfoError("suggestedWindow is missing or not an object")
    start = _rfc3339(window.get("start"), "suggestedWindow.start")
    end = _rfc3339(window.get("end"), "suggestedWindow.end")
    if not end > start:
        raise RenewalInfoError("suggestedWindow.end is not after its start")
    return start, end


# ---------------------------------------------------------------- account key


def load_or_create_account_key(path: str | os.PathLike) -> bytes:
    """The account key PEM at `path`, generated (EC P-256) and stored 0600 on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, p)
    return pem


def _jwk(pem: bytes, path: object):
    import josepy as jose
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise AcmeError(
            "account key", f"{path}: not a usable private key ({one_line(e)})"
        ) from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": jose.ES256, "secp384r1": jose.ES384}
        alg = algs.get(key.curve.name)
        if alg is None:
            raise AcmeError("account key", f"{path}: curve {key.curve.name} is not supported")
        return jose.JWKEC(key=key), alg
    if isinstance(key, rsa.RSAPrivateKey):
        return jose.JWKRSA(key=key), jose.RS256
    raise AcmeError("account key", f"{path}: key type is not supported")


# ---------------------------------------------------------------- the order


def _explain(step: str, exc: BaseException) -> AcmeError:
    """Any failure of the acme library or the network, as one AcmeError line."""
    import requests
    from acme import errors, messages

    if isinstance(exc, AcmeError):
        return exc
    if isinstance(exc, messages.Error):
        return AcmeError(step, "the CA refused: " + describe_problem(exc.typ, exc.detail))
    if isinstance(exc, errors.ValidationError):
        parts = []
        for authzr in exc.failed_authzrs:
            ident = authzr.body.identifier.value
            for chall in authzr.body.challenges:
                if chall.error is not None:
                    problem = describe_problem(chall.error.typ, chall.error.detail)
                    parts.append(f"{ident} {chall.chall.typ}: {problem}")
        return AcmeError(step, "validation failed: " + one_line("; ".join(parts) or "no detail"))
    if isinstance(exc, errors.IssuanceError):
        return AcmeError(
            step, "the CA did not issue: " + describe_problem(exc.error.typ, exc.error.detail)
        )
    if isinstance(exc, errors.TimeoutError):
        return AcmeError(step, "the CA did not finish in time")
    if isinstance(exc, errors.ConflictError):
        return AcmeError(step, f"conflict at {one_line(exc.location)}")
    if isinstance(exc, requests.exceptions.SSLError):
        return AcmeError(step, f"TLS to the CA failed ({one_line(exc, 200)})")
    if isinstance(exc, requests.exceptions.Timeout):
        return AcmeError(step, "the CA did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return AcmeError(step, f"cannot reach the CA ({one_line(exc, 200)})")
    if isinstance(exc, ValueError) and str(exc).startswith("Requesting "):
        # acme.client turns connection failures into ValueError("Requesting HOST/PATH: why").
        why = str(exc).partition(":")[2].strip()
        return AcmeError(step, f"cannot reach the CA ({one_line(why, 200)})")
    if isinstance(exc, errors.ClientError):
        arg = exc.args[0] if exc.args else exc
        if isinstance(arg, requests.Response):
            return AcmeError(step, f"unexpected answer from the CA: HTTP {arg.status_code}")
        return AcmeError(step, f"unexpected answer from the CA ({one_line(arg, 200)})")
    return AcmeError(step, f"{type(exc).__name__}: {one_line(exc, 200)}")


def _step(step: str, fn: Callable, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # every library/network failure becomes one line
        raise _explain(step, e) from None


def _network(account_key_path, ca_file, session, timeout):
    import requests
    from acme import client

    pem = _step("account key", load_or_create_account_key, account_key_path)
    jwk, alg = _jwk(pem, account_key_path)
    verify = ca_file or (session.verify if session is not None else True)
    net = client.ClientNetwork(
        jwk, alg=alg, verify_ssl=verify, user_agent="medtls-enroll", timeout=int(timeout)
    )
    if session is not None:
        net.session.close()
        net.session = session
    else:
        net.session = requests.Session()
    return net, jwk


def _register(acme_client, net, jwk, eab, contact) -> None:
    from acme import errors, messages

    binding = None
    if eab is not None:
        kid, hmac_key = eab
        binding = messages.ExternalAccountBinding.from_data(
            account_public_key=jwk.public_key(),
            kid=kid,
            hmac_key=hmac_key,
            directory=acme_client.directory,
        )
    elif acme_client.external_account_required():
        raise AcmeError("account", "the CA requires External Account Binding: configure "
                        "enrollment.acme.eab_key_id and eab_hmac_key_file")  # fmt: skip
    registration = messages.NewRegistration(
        contact=tuple(contact),
        terms_of_service_agreed=True,
        external_account_binding=binding,
    )
    try:
        acme_client.new_account(registration)
    except errors.ConflictError as existing:
        # The key already has an account (RFC 8555 §7.3.1: 200 + Location): use it.
        net.account = messages.RegistrationResource(
            uri=existing.location, body=messages.Registration()
        )


def csr_identifiers(csr_pem: bytes) -> list[tuple[str, str]]:
    """[("ip"|"dns", value)] of the CSR's subjectAltName: what the order asks for. (The acme
    library's new_order also counts the subject CN as a DNS name, which a CA refuses when the
    CN is an IP address.)"""
    from cryptography import x509

    csr = x509.load_pem_x509_csr(csr_pem)
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise AcmeError("new order", "the CSR has no subjectAltName") from None
    idents = [("dns", d) for d in san.get_values_for_type(x509.DNSName)]
    idents += [("ip", str(i)) for i in san.get_values_for_type(x509.IPAddress)]
    if not idents:
        raise AcmeError("new order", "the CSR names no IP address or DNS name")
    return idents


def _new_order(acme_client, csr_pem: bytes):
    from acme import messages

    idents = [
        messages.Identifier(
            typ=messages.IDENTIFIER_IP if typ == "ip" else messages.IDENTIFIER_FQDN, value=value
        )
        for typ, value in csr_identifiers(csr_pem)
    ]
    response = acme_client._post(
        acme_client.directory["newOrder"], messages.NewOrder(identifiers=idents)
    )
    body = messages.Order.from_json(response.json())
    authorizations = [
        acme_client._authzr_from_response(acme_client._post_as_get(url), uri=url)
        for url in body.authorizations
    ]
    return messages.OrderResource(
        body=body,
        uri=response.headers.get("Location"),
        authorizations=authorizations,
        csr_pem=csr_pem,
    )


def obtain(
    directory: str,
    ca_file: str | None,
    eab: tuple[str, str] | None,
    account_key_path: str | os.PathLike,
    csr_pem: bytes,
    challenges: Sequence[str],
    responder: Responder,
    session=None,
    contact: Sequence[str] = (),
    timeout: float = DEFAULT_ORDER_TIMEOUT,
) -> bytes:
    """Register (or find) the account, order a certificate for the CSR's identifiers, answer one
    challenge per authorization in `challenges` order, finalize; the full chain PEM."""
    from acme import client, messages

    deadline = time.monotonic() + timeout
    net, jwk = _network(account_key_path, ca_file, session, min(timeout, 30))
    dir_obj = _step("directory", client.ClientV2.get_directory, directory, net)
    acme_client = client.ClientV2(dir_obj, net)
    _step("account", _register, acme_client, net, jwk, eab, contact)
    orderr = _step("new order", _new_order, acme_client, csr_pem)

    for authzr in orderr.authorizations:
        if authzr.body.status == messages.STATUS_VALID:
            continue
        ident = authzr.body.identifier
        offered = {c.chall.typ: c for c in authzr.body.challenges}
        typ = choose_challenge(list(offered), challenges, responder.serves)
        if typ is None:
            raise AcmeError(
                "challenge",
                f"{ident.value}: the CA offers {', '.join(sorted(offered)) or 'nothing'}, "
                f"configured and servable are {', '.join(challenges)}",
            )
        challb = offered[typ]
        response = challb.chall.response(jwk)
        key_auth = response.key_authorization
        responder.expect(typ, ident.typ.name, ident.value, challb.chall.encode("token"), key_auth)
        _step("challenge", acme_client.answer_challenge, challb, response)

    remaining = max(1.0, deadline - time.monotonic())
    until = dt.datetime.now() + dt.timedelta(seconds=remaining)
    orderr = _step("validation", acme_client.poll_authorizations, orderr, until)
    orderr = _step("finalize", acme_client.finalize_order, orderr, until)
    chain = (orderr.fullchain_pem or "").encode("ascii", "replace")
    if b"-----BEGIN CERTIFICATE-----" not in chain:
        raise AcmeError("download", "the CA sent no certificate chain")
    return chain


# ---------------------------------------------------------------- renewal information


def renewal_info(
    directory: str,
    ca_file: str | None,
    cert_pem: bytes,
    session=None,
    timeout: float = 10.0,
) -> tuple[float, float] | None:
    """RFC 9773: the CA's suggested renewal window for the certificate, or None when the
    directory has no renewalInfo (or the certificate has no authority key identifier)."""
    import requests
    from cryptography import x509

    sess = session or requests.Session()
    verify = ca_file or sess.verify

    def get(url: str) -> bytes:
        resp = sess.get(url, timeout=timeout, verify=verify, stream=True)
        try:
            if resp.status_code != 200:
                raise AcmeError("renewal info", f"{one_line(url, 120)}: HTTP {resp.status_code}")
            body = resp.raw.read(MAX_RENEWAL_INFO_BYTES + 1, decode_content=True)
        finally:
            resp.close()
        return body

    try:
        dir_doc = json.loads(get(directory).decode("utf-8"))
    except AcmeError:
        raise
    except (UnicodeDecodeError, ValueError):
        raise AcmeError("renewal info", "the directory is not a JSON object") from None
    except Exception as e:
        raise _explain("renewal info", e) from None
    url = dir_doc.get("renewalInfo") if isinstance(dir_doc, dict) else None
    if not isinstance(url, str) or not url.startswith("https://"):
        return None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    if not aki.key_identifier:
        return None
    cert_id = ari_cert_id(aki.key_identifier, cert.serial_number)
    try:
        return parse_renewal_info(get(url.rstrip("/") + "/" + cert_id))
    except RenewalInfoError as e:
        raise AcmeError("renewal info", str(e)) from None
    except AcmeError:
        raise
    except Exception as e:
        raise _explain("renewal info", e) from None
