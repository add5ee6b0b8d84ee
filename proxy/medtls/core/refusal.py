"""What a DICOM or HL7 device is told when the box cannot give it its peer: one table from the
connection's result label (`medtls.core.events`) to the A-ASSOCIATE-RJ fields, the HL7 ACK
code and a text naming the cause. Pure data and lookups.

Transient (RJ result 2, HL7 AE: try again later) where the cause clears by itself: the peer is
down or slow, the box's clock is not yet synchronised, its CRL is stale, a limit is reached.
Permanent (RJ result 1, HL7 AR: do not retry unchanged) where someone must act: the peer is not
who the configuration says, the peer refuses the box's certificate, no TLS version or cipher in
common, an ACL refusal. docs/security.md shows the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from medtls.core import dicom, hl7
from medtls.core import events as ev


@dataclass(frozen=True, slots=True)
class Refusal:
    """One row: the A-ASSOCIATE-RJ source and reason, transient or not, and the human text."""

    transient: bool
    source: int  # dicom.SOURCE_*
    reason: int  # PS3.8 table 9-21, for that source
    text: str

    @property
    def result(self) -> int:
        return dicom.RESULT_TRANSIENT if self.transient else dicom.RESULT_PERMANENT

    @property
    def hl7_code(self) -> str:
        return "AE" if self.transient else "AR"

    def associate_rj(self) -> bytes:
        return dicom.associate_rj(self.result, self.source, self.reason)

    def describe_rj(self) -> str:
        return dicom.describe_rj(self.result, self.source, self.reason)

    def message(self, result: str) -> str:
        """The text an HL7 sender gets (MSA-3), naming the cause and the log's result label."""
        return f"medtls: {self.text} ({result})"


_PRES, _ACSE, _USER = dicom.SOURCE_PRESENTATION, dicom.SOURCE_ACSE, dicom.SOURCE_USER
_CONGESTION, _LOCAL_LIMIT = 1, 2  # source 3
_NO_REASON, _VERSION = 1, 2  # source 2 (and 1: no-reason-given)
_CALLING_AE = 3  # source 1


def _t(source: int, reason: int, text: str) -> Refusal:
    return Refusal(True, source, reason, text)


def _p(source: int, reason: int, text: str) -> Refusal:
    return Refusal(False, source, reason, text)


# Transient, peer side: temporary-congestion. Transient, this box: local-limit-exceeded.
# Permanent, we refuse the peer: provider (ACSE) no-reason-given; the peer refuses us: service-user
# no-reason-given (the called side said no); TLS version/cipher: protocol-version-not-supported.
TABLE: dict[str, Refusal] = {
    ev.CONNECT_FAILED: _t(_PRES, _CONGESTION, "peer unreachable (down, refused or timed out)"),
    ev.TIMEOUT: _t(_PRES, _CONGESTION, "peer did not complete the TLS handshake in time"),
    ev.HANDSHAKE_ERROR: _t(_PRES, _CONGESTION, "TLS handshake with the peer failed"),
    ev.CLOCK_UNSYNCED: _t(_PRES, _LOCAL_LIMIT, "proxy clock not yet synchronised"),
    ev.CRL_UNUSABLE: _t(_PRES, _LOCAL_LIMIT, "proxy revocation list (CRL) stale or missing"),
    ev.LIMIT: _t(_PRES, _LOCAL_LIMIT, "proxy connection limit reached"),
    ev.HANDSHAKE_LIMIT: _t(_PRES, _LOCAL_LIMIT, "proxy handshake limit reached"),
    ev.SOURCE_LIMIT: _t(_PRES, _LOCAL_LIMIT, "proxy handshake limit reached"),
    ev.INTERNAL_ERROR: _t(_ACSE, _NO_REASON, "proxy internal error"),
    ev.UNKNOWN_CA: _p(_ACSE, _NO_REASON, "peer certificate not trusted"),
    ev.CERT_EXPIRED: _p(_ACSE, _NO_REASON, "peer certificate expired or not yet valid"),
    ev.CERT_REVOKED: _p(_ACSE, _NO_REASON, "peer certificate revoked"),
    ev.CERT_PURPOSE: _p(_ACSE, _NO_REASON, "peer certificate not for this use"),
    ev.BAD_CERTIFICATE: _p(_ACSE, _NO_REASON, "peer certificate malformed"),
    ev.NO_CERTIFICATE: _p(_ACSE, _NO_REASON, "peer sent no certificate"),
    ev.IDENTITY_MISMATCH: _p(_ACSE, _NO_REASON, "peer identity does not match the configuration"),
    ev.NOT_TLS: _p(_ACSE, _NO_REASON, "peer does not speak TLS"),
    ev.PROTOCOL_VERSION: _p(_ACSE, _VERSION, "no TLS version in common with the peer"),
    ev.NO_SHARED_CIPHER: _p(_ACSE, _VERSION, "no TLS cipher suite in common with the peer"),
    ev.PEER_REJECTED: _p(_USER, _NO_REASON, "peer refused the proxy's certificate"),
    ev.PEER_UNKNOWN_CA: _p(_USER, _NO_REASON, "peer does not trust the proxy's certificate CA"),
    ev.PEER_CERT_EXPIRED: _p(_USER, _NO_REASON, "peer says the proxy's certificate expired"),
    ev.PEER_CERT_REVOKED: _p(_USER, _NO_REASON, "peer says the proxy's certificate is revoked"),
    ev.ACL_DENIED: _p(_USER, _CALLING_AE, "caller not allowed on this port"),
    ev.CALLING_AE_REFUSED: _p(
        _USER, _CALLING_AE, "calling AE title not allowed for the caller's certificate"
    ),
    ev.NO_ROUTE: _p(_USER, _NO_REASON, "destination not allowed by the proxy"),
}  # fmt: skip

# A label the table does not know (a newer one): a failure we cannot name, worth a retry.
DEFAULT = _t(_ACSE, _NO_REASON, "secure connection to the peer failed")


def refusal_for(result: str) -> Refusal:
    """The row for a result label; DEFAULT for a label the table does not list."""
    return TABLE.get(result, DEFAULT)


# The most the daemon reads of a refused device's first message.
FIRST_MESSAGE_CAP = {"dicom": dicom.MAX_ASSOCIATE_RQ, "hl7": hl7.MAX_FRAME}
# DICOM (PS3.8 9.2, state Sta13): after an A-ASSOCIATE-RJ the requester closes the transport; the
# acceptor waits for that, bounded by its ARTIM timer. A requester that sees the connection end
# before it has read the RJ may report an abort instead (pynetdicom does, under load).
ARTIM_SECONDS = 5.0
# What the daemon reads and drops from a requester while it waits for that close.
AWAIT_CLOSE_CAP = 64 * 1024


class NotAnswerable(ValueError):
    """The device's first bytes are not a message of its protocol (or too long to read): it
    gets a plain close, no answer."""


def answer(protocol: str, data: bytes, result: str, control_id: str, timestamp: str):
    """What a device on a `protocol` route is sent when its peer leg failed with `result`, given
    its first bytes `data`: (answer bytes, what was answered) once its first message is
    complete, None while it is not; NotAnswerable for anything else."""
    r = refusal_for(result)
    cap = FIRST_MESSAGE_CAP[protocol]
    try:
        if protocol == "dicom":
            rq = dicom.read_associate_rq(data)
            if rq is None:
                return None
            what = f"A-ASSOCIATE-RJ ({r.describe_rj()}) to {rq.calling_ae} calling {rq.called_ae}"
            return r.associate_rj(), what
        message = hl7.mllp_frame(data, cap)
        if message is None:
            return None
        msh = hl7.parse_msh(message)
    except (dicom.DicomError, hl7.Hl7Error) as e:
        raise NotAnswerable(str(e)) from None
    ack = hl7.ack(msh, r.hl7_code, r.message(result), control_id, timestamp)
    return hl7.frame(ack), f"ACK {r.hl7_code} to message {msh.control_id}"
