"""`medtls check`: the serving process's own validation (`material.validate`, also run at
start and at every reload, so the three agree), plus advice only an offline tool can give:
expiry warnings, key sizes, CA and CRL validity (read with `cryptography`, which the serving
process never imports)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from medtls.config import Config, Problem
from medtls.enroll.x509read import load_pem_certificates, utc
from medtls.ops.health import expiry_windows
from medtls.tls.context import TLSSetupError, read_crls, read_passphrase
from medtls.tls.material import awaiting_enrollment, validate

# CRLs are reissued every few days; one due within this is a renewal job that may have stopped.
CRL_DUE_WARNING = dt.timedelta(days=1)


def _load_certs(path: Path, role: str, problems: list[Problem]) -> list[x509.Certificate]:
    try:
        certs = load_pem_certificates(path.read_bytes())
    except OSError as e:
        problems.append(Problem(role, f"cannot read {path}: {e.strerror}"))
        return []
    except ValueError:
        certs = []
    if not certs:
        problems.append(Problem(role, f"no valid PEM certificate in {path}"))
    return certs


def _validity(cert: x509.Certificate, role: str, now: dt.datetime, out: list[Problem]) -> None:
    not_before, not_after = utc(cert, "not_valid_before"), utc(cert, "not_valid_after")
    if not_after < now:
        out.append(Problem(role, f"certificate {_name(cert)} expired on {not_after:%Y-%m-%d}"))
    elif not_before > now:
        out.append(
            Problem(role, f"certificate {_name(cert)} not valid before {not_before:%Y-%m-%d}")
        )


def _name(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}'"


def _key_problems(config: Config, out: list[Problem]):
    ident = config.identity
    try:
        passphrase = read_passphrase(ident.key_passphrase_file)
    except TLSSetupError as e:
        out.append(Problem("identity.key_passphrase_file", str(e)))
        return None
    try:
        data = ident.key.read_bytes()
    except OSError as e:
        out.append(Problem("identity.key", f"cannot read {ident.key}: {e.strerror}"))
        return None
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        if passphrase is None:
            out.append(
                Problem("identity.key", "key is encrypted: set identity.key_passphrase_file")
            )
        else:
            out.append(Problem("identity.key", "key is not encrypted but a passphrase file is set"))
    except ValueError as e:
        if passphrase is not None and "password" in str(e).lower():
            out.append(Problem("identity.key_passphrase_file", "wrong passphrase for identity.key"))
        else:
            out.append(Problem("identity.key", f"no valid PEM private key in {ident.key}"))
    return None


def check_material(
    config: Config, now: dt.datetime | None = None
) -> tuple[list[Problem], list[str]]:
    """Return (problems, warnings) for every certificate, key and CA bundle of `config`."""
    now = now or dt.datetime.now(dt.UTC)
    problems: list[Problem] = []
    warnings: list[str] = []

    cas: dict[str, list[x509.Certificate]] = {}
    ca_roles = [("trust.ca", config.trust_ca)]
    ca_roles += [(f"outbound[{i}].verify.ca", p.verify.ca) for i, p in enumerate(config.outbound)
                 if p.verify and p.verify.ca]  # fmt: skip
    ca_roles += [(f"inbound[{i}].ca", p.ca) for i, p in enumerate(config.inbound) if p.ca]
    for role, path in ca_roles:
        certs = _load_certs(path, role, problems)
        cas[role] = certs
        for c in certs:
            _validity(c, role, now, problems)

    # Enrollment configured and no certificate yet: the daemon starts fail closed, enrolling, and
    # `medtls enroll` checks what it gets before installing it; everything else is checked here.
    enrolling = awaiting_enrollment(config)
    chain = (
        []
        if enrolling
        else _load_certs(config.identity.certificate, "identity.certificate", problems)
    )
    key = None if enrolling else _key_problems(config, problems)
    if chain:
        leaf = chain[0]
        role = "identity.certificate"
        for c in chain[1:]:  # the leaf's validity and chain are validate()'s (as in serving)
            _validity(c, role, now, problems)
        not_before, not_after = utc(leaf, "not_valid_before"), utc(leaf, "not_valid_after")
        if not_before > now:
            warnings.append(
                f"{role}: certificate not valid before {not_before:%Y-%m-%d} "
                "(peers refuse it until then; or is this clock wrong?)"
            )
        left = (not_after - now).total_seconds()
        warn, _ = expiry_windows(
            not_before.timestamp(), not_after.timestamp()
        )  # the same windows as `medtls status`: a fraction of the lifetime, capped
        if 0 < left < warn:
            warnings.append(f"{role}: certificate expires in {_days_hours(left)}")
        pub = leaf.public_key()
        if isinstance(pub, rsa.RSAPublicKey) and pub.key_size < 2048:
            problems.append(Problem(role, f"RSA key of {pub.key_size} bits (need >= 2048)"))
        if isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.key_size < 256:
            problems.append(Problem(role, f"EC key of {pub.curve.key_size} bits (need >= 256)"))
        if key is not None:
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            der = serialization.Encoding.DER
            if key.public_key().public_bytes(der, spki) != pub.public_bytes(der, spki):
                problems.append(Problem("identity.key", "does not match identity.certificate"))
        _usage(leaf, role, problems)
    if config.trust_crl is not None:
        _crl_problems(config.trust_crl, [c for certs in cas.values() for c in certs], now,
                      problems, warnings)  # fmt: skip
    try:
        if enrolling:
            warnings.append(enrolling)
        else:
            validate(config)
    except TLSSetupError as e:
        # The message names its key path and file: the very line a reload logs. A key path
        # already reported above (say, the details of an unreadable key) is not repeated.
        msg = str(e)
        if msg.partition(": ")[0] not in {p.path for p in problems}:
            problems.append(Problem("", msg))
    warnings = config.warnings() + warnings
    return problems, warnings


def _crl_problems(
    path: Path,
    cas: list[x509.Certificate],
    now: dt.datetime,
    problems: list[Problem],
    warnings: list[str],
) -> None:
    """Each CRL: signed by its CA when that CA is configured (an intermediate's CRL is
    verified against the intermediate the peer sends, in the handshake), and not expired."""
    role = "trust.crl"
    try:
        blocks = read_crls(path)
    except TLSSetupError as e:
        problems.append(Problem("", str(e)))  # names trust.crl, the file and the block
        return
    for block in blocks:
        try:
            crl = x509.load_der_x509_crl(block.der)
        except ValueError:
            problems.append(Problem(role, f"{path}: {block.where}: not a valid CRL"))
            continue
        who = f"CRL of '{crl.issuer.rfc4514_string()}'"
        signers = [ca for ca in cas if ca.subject == crl.issuer]
        if signers and not any(_crl_signed_by(crl, ca) for ca in signers):
            problems.append(Problem(role, f"{who} is not signed by its configured CA"))
        due = utc(crl, "next_update")
        if due is None:
            continue
        if due < now:
            problems.append(
                Problem(role, f"{who} expired on {due:%Y-%m-%d %H:%M} UTC: its peers are refused")
            )
        elif due - now < CRL_DUE_WARNING:
            hours = int((due - now).total_seconds() // 3600)
            warnings.append(f"{role}: {who} is due for renewal in {hours} hours")


def _crl_signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())
    except (TypeError, ValueError):
        return False


def _usage(leaf: x509.Certificate, role: str, out: list[Problem]) -> None:
    """Key usage and key type; the extended key usage is validate()'s (a real handshake)."""
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            out.append(Problem(role, "key usage lacks digitalSignature"))
    except x509.ExtensionNotFound:
        pass
    pub = leaf.public_key()
    if isinstance(pub, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        out.append(Problem(role, "Ed25519/Ed448 keys are not allowed by the DICOM profiles"))


def _days_hours(seconds: float) -> str:
    days, hours = int(seconds // 86400), int(seconds % 86400 // 3600)
    return f"{days} days" if days >= 2 else f"{days * 24 + hours} hours"
