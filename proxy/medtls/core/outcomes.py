"""Outcome classification: what a TLS error means, as a reason category and a human detail.

Pure: takes the exception OpenSSL raised (through `ssl`), returns `medtls.core.events` reasons.
"""

from __future__ import annotations

import re
import ssl

from medtls.core import events as ev

# X509_V_ERR_*: CERT_REVOKED; UNABLE_TO_GET_CRL, UNABLE_TO_DECRYPT_CRL_SIGNATURE,
# CRL_SIGNATURE_FAILURE, CRL_NOT_YET_VALID, CRL_HAS_EXPIRED, ERROR_IN_CRL_LAST/NEXT_UPDATE_FIELD,
# UNABLE_TO_GET_CRL_ISSUER, KEYUSAGE_NO_CRL_SIGN, UNHANDLED_CRITICAL_CRL_EXTENSION,
# DIFFERENT_CRL_SCOPE, CRL_PATH_VALIDATION_ERROR (openssl/x509_vfy.h).
X509_CERT_HAS_EXPIRED = frozenset({9, 10})  # CERT_NOT_YET_VALID, CERT_HAS_EXPIRED
X509_CERT_REVOKED = 23
X509_INVALID_PURPOSE = 26
X509_CRL_PROBLEMS = frozenset({3, 5, 8, 11, 12, 15, 16, 33, 35, 36, 44, 54})

# OpenSSL reason codes that mean the peer did not speak TLS at all.
NOT_TLS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "HTTP_REQUEST",
        "HTTPS_PROXY_REQUEST",
        "UNKNOWN_PROTOCOL",
        "PACKET_LENGTH_TOO_LONG",
        "RECORD_LENGTH_MISMATCH",
    }
)

# OpenSSL reason code -> (reason category, human detail)
TLS_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": (ev.NO_CERTIFICATE, "client sent no certificate"),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (ev.NO_CERTIFICATE, "peer requires a client certificate"),
    "UNSUPPORTED_PROTOCOL": (ev.PROTOCOL_VERSION, "peer offers no allowed TLS version"),
    "TLSV1_ALERT_PROTOCOL_VERSION": (ev.PROTOCOL_VERSION, "peer refused our TLS version"),
    "WRONG_SSL_VERSION": (ev.PROTOCOL_VERSION, "wrong TLS version"),
    "NO_PROTOCOLS_AVAILABLE": (ev.PROTOCOL_VERSION, "no TLS version available"),
    "NO_SHARED_CIPHER": (ev.NO_SHARED_CIPHER, "no cipher suite in common"),
    "SSLV3_ALERT_HANDSHAKE_FAILURE": (ev.PEER_REJECTED, "peer refused the handshake"),
    "TLSV1_ALERT_UNKNOWN_CA": (ev.PEER_UNKNOWN_CA, "peer does not trust our certificate"),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
        ev.PEER_CERT_EXPIRED, "peer says our certificate expired"),
    "SSLV3_ALERT_CERTIFICATE_REVOKED": (
        ev.PEER_CERT_REVOKED, "peer: our certificate is revoked"),
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (
        ev.PEER_REJECTED, "peer rejected our certificate for this use (extended key usage?)"),
    "SSLV3_ALERT_BAD_CERTIFICATE": (ev.PEER_REJECTED, "peer rejected our certificate"),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (ev.PEER_REJECTED, "peer rejected our certificate"),
    "TLSV1_ALERT_ACCESS_DENIED": (ev.PEER_REJECTED, "peer denied access"),
    "TLSV1_ALERT_DECRYPT_ERROR": (ev.PEER_REJECTED, "peer failed to verify us"),
}  # fmt: skip


# TLS alert descriptions (RFC 8446 6, RFC 5246 7.2): name -> code.
ALERTS = {
    "close_notify": 0, "unexpected_message": 10, "bad_record_mac": 20,
    "decryption_failed": 21, "record_overflow": 22, "decompression_failure": 30,
    "handshake_failure": 40, "no_certificate": 41, "bad_certificate": 42,
    "unsupported_certificate": 43, "certificate_revoked": 44, "certificate_expired": 45,
    "certificate_unknown": 46, "illegal_parameter": 47, "unknown_ca": 48, "access_denied": 49,
    "decode_error": 50, "decrypt_error": 51, "export_restriction": 60, "protocol_version": 70,
    "insufficient_security": 71, "internal_error": 80, "inappropriate_fallback": 86,
    "user_canceled": 90, "no_renegotiation": 100, "missing_extension": 109,
    "unsupported_extension": 110, "certificate_unobtainable": 111, "unrecognized_name": 112,
    "bad_certificate_status_response": 113, "bad_certificate_hash_value": 114,
    "unknown_psk_identity": 115, "certificate_required": 116, "no_application_protocol": 120,
}  # fmt: skip
# OpenSSL names a received alert in its reason code: SSLV3_ALERT_BAD_CERTIFICATE,
# TLSV1_ALERT_UNKNOWN_CA, TLSV13_ALERT_CERTIFICATE_REQUIRED, TLSV1_UNRECOGNIZED_NAME, ...
_ALERT_REASON = re.compile(r"^(?:SSLV3|TLSV1|TLSV13)_(?:ALERT_)?([A-Z_]+)$")


def peer_alert(reason: str) -> tuple[str, int] | None:
    """The alert the peer sent, as (name, code), from an OpenSSL reason code; None if the
    reason is not a received alert."""
    m = _ALERT_REASON.match(reason.upper())
    if m is None:
        return None
    name = m.group(1).lower()
    name = "user_canceled" if name == "user_cancelled" else name  # OpenSSL's spelling
    code = ALERTS.get(name)
    return None if code is None else (name, code)


def classify_tls_error(e: Exception) -> tuple[str, str]:
    """Map an ssl error to (reason category, human detail).

    When the peer sent an alert, the detail names it and its code ("peer sent alert
    unknown_ca (48)"), after what it means for us."""
    category, detail = _classify(e)
    alert = peer_alert(getattr(e, "reason", None) or "")
    if alert is not None:
        said = f"peer sent alert {alert[0]} ({alert[1]})"
        detail = f"{detail}: {said}" if detail != said else said
    return category, detail


def _classify(e: Exception) -> tuple[str, str]:
    if isinstance(e, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return ev.HANDSHAKE_ERROR, "connection closed during TLS handshake"
    reason = (getattr(e, "reason", None) or "").upper()
    if reason == "CERTIFICATE_VERIFY_FAILED":
        code = getattr(e, "verify_code", 0)
        msg = getattr(e, "verify_message", "") or "certificate verify failed"
        if code in X509_CERT_HAS_EXPIRED:  # OpenSSL says "certificate has expired"
            return ev.CERT_EXPIRED, f"peer certificate {msg.removeprefix('certificate ')}"
        if code == X509_CERT_REVOKED:
            return ev.CERT_REVOKED, "peer certificate revoked (trust.crl)"
        if code == X509_INVALID_PURPOSE:
            return ev.CERT_PURPOSE, f"peer certificate {msg} (extended key usage lacks its role)"
        if code in X509_CRL_PROBLEMS:
            return ev.CRL_UNUSABLE, f"trust.crl: {msg} for the peer's issuer"
        return ev.UNKNOWN_CA, f"peer certificate not trusted: {msg}"
    if reason in TLS_REASONS:
        return TLS_REASONS[reason]
    if reason in NOT_TLS:
        return ev.NOT_TLS, "peer did not speak TLS (plaintext sent to a TLS port?)"
    alert = peer_alert(reason)
    if alert is not None:  # an alert no row above names (decode_error, internal_error, ...)
        return ev.HANDSHAKE_ERROR, f"peer sent alert {alert[0]} ({alert[1]})"
    return ev.HANDSHAKE_ERROR, (reason.lower().replace("_", " ") or str(e))
