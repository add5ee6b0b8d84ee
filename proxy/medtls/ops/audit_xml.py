"""DICOM PS3.15 A.5 (RFC 3881 derived) audit messages for what a TLS node does.

Builders return the XML text; no I/O. Codes are from the DCM coding scheme (PS3.16).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import re
from dataclasses import dataclass

# (code, codeSystemName, originalText)
APPLICATION_ACTIVITY = ("110100", "DCM", "Application Activity")
SECURITY_ALERT = ("110113", "DCM", "Security Alert")
APPLICATION_START = ("110120", "DCM", "Application Start")
APPLICATION_STOP = ("110121", "DCM", "Application Stop")
NODE_AUTHENTICATION = ("110126", "DCM", "Node Authentication")
SECURITY_CONFIGURATION = ("110129", "DCM", "Security Configuration")
SOFTWARE_CONFIGURATION = ("110131", "DCM", "Software Configuration")
ROLE_APPLICATION = ("110150", "DCM", "Application")
ROLE_APPLICATION_LAUNCHER = ("110151", "DCM", "Application Launcher")
ROLE_DESTINATION = ("110152", "DCM", "Destination Role ID")
ROLE_SOURCE = ("110153", "DCM", "Source Role ID")
ID_TYPE_URI = ("12", "RFC-3881", "URI")
ID_TYPE_NODE = ("110182", "DCM", "Node ID")

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = "0", "4", "8", "12"
AUDIT_SOURCE_APPLICATION_SERVER = "4"
NAP_MACHINE_NAME, NAP_IP_ADDRESS = "1", "2"


@dataclass(frozen=True)
class Source:
    """Who reports: the box (AuditSourceID) and the process (ActiveParticipant UserID)."""

    audit_source_id: str
    site_id: str = ""
    process: str = "medtls"
    node_address: str = ""  # IP of the box/device, NetworkAccessPointID


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_SPECIAL = re.compile(r'[&<>"\t\n\r]')
_ATTR_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "\t": "&#9;",
    "\n": "&#10;",
    "\r": "&#13;",
}


def _escape(text: str) -> str:
    """Escape for attribute values and text (attribute-safe superset)."""
    if not _SPECIAL.search(text):
        return text
    return _SPECIAL.sub(lambda m: _ATTR_ESCAPES[m.group()], text)


class _Xml:
    """Minimal XML writer: the messages are small and built once per connection on the
    daemon's loop, where ElementTree costs several times more."""

    def __init__(self):
        self.parts: list[str] = []

    def open(self, tag: str, attrs: dict[str, str], empty: bool = False) -> None:
        text = "".join(f' {k}="{_escape(v)}"' for k, v in attrs.items())
        self.parts.append(f"<{tag}{text}{'/' if empty else ''}>")

    def close(self, tag: str) -> None:
        self.parts.append(f"</{tag}>")

    def text_element(self, tag: str, text: str) -> None:
        self.parts.append(f"<{tag}>{_escape(text)}</{tag}>")

    def coded(self, tag: str, code: tuple[str, str, str]) -> None:
        self.open(
            tag,
            {"csd-code": code[0], "codeSystemName": code[1], "originalText": code[2]},
            empty=True,
        )

    def __str__(self) -> str:
        return "".join(self.parts)


def _event(
    x: _Xml,
    event_id,
    type_code,
    outcome: str,
    when: str | None,
    description: str = "",
) -> None:
    x.open(
        "EventIdentification",
        {"EventActionCode": "E", "EventDateTime": when or _now(), "EventOutcomeIndicator": outcome},
    )
    x.coded("EventID", event_id)
    x.coded("EventTypeCode", type_code)
    if description:
        x.text_element("EventOutcomeDescription", description)
    x.close("EventIdentification")


def _participant(
    x: _Xml,
    user_id: str,
    requestor: bool,
    role=None,
    address: str = "",
    user_name: str = "",
    ae_title: str = "",
) -> None:
    attrs = {"UserID": user_id or "unknown", "UserIsRequestor": "true" if requestor else "false"}
    if ae_title:
        # PS3.15 A.5.2.1: a DICOM application's AE titles as AlternativeUserID "AETITLES=..."
        attrs["AlternativeUserID"] = f"AETITLES={ae_title}"
    if user_name:
        attrs["UserName"] = user_name
    if address:
        attrs["NetworkAccessPointID"] = address
        attrs["NetworkAccessPointTypeCode"] = (
            NAP_IP_ADDRESS if _looks_like_ip(address) else NAP_MACHINE_NAME
        )
    if role is None:
        x.open("ActiveParticipant", attrs, empty=True)
        return
    x.open("ActiveParticipant", attrs)
    x.coded("RoleIDCode", role)
    x.close("ActiveParticipant")


def _looks_like_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _source(x: _Xml, src: Source) -> None:
    attrs = {"AuditSourceID": src.audit_source_id}
    if src.site_id:
        attrs["AuditEnterpriseSiteID"] = src.site_id
    x.open("AuditSourceIdentification", attrs)
    x.open("AuditSourceTypeCode", {"csd-code": AUDIT_SOURCE_APPLICATION_SERVER}, empty=True)
    x.close("AuditSourceIdentification")


def _object(x: _Xml, object_id: str, id_type, name: str, details: dict[str, str]) -> None:
    x.open(
        "ParticipantObjectIdentification",
        {"ParticipantObjectID": object_id, "ParticipantObjectTypeCode": "2"},
    )
    x.coded("ParticipantObjectIDTypeCode", id_type)
    x.text_element("ParticipantObjectName", name)
    for key, value in details.items():
        x.open(
            "ParticipantObjectDetail",
            {"type": key, "value": base64.b64encode(value.encode()).decode()},
            empty=True,
        )
    x.close("ParticipantObjectIdentification")


def application_activity(
    src: Source, started: bool, outcome: str = SUCCESS, launcher: str = "", when=None
) -> str:
    """A.5.3.1 Application Activity with Application Start/Stop."""
    x = _Xml()
    x.open("AuditMessage", {})
    _event(
        x,
        APPLICATION_ACTIVITY,
        APPLICATION_START if started else APPLICATION_STOP,
        outcome,
        when,
    )
    _participant(x, src.process, False, ROLE_APPLICATION, src.node_address)
    if launcher:
        _participant(x, launcher, True, ROLE_APPLICATION_LAUNCHER)
    _source(x, src)
    x.close("AuditMessage")
    return str(x)


# Node-authentication messages repeat per peer except for their time: built once per distinct
# content (about 120 µs of Python on the daemon's loop), then only the time is filled in.
_WHEN = "@@medtls-event-time@@"
_NODE_AUTH_CACHE: dict[tuple, tuple[str, str]] = {}
_NODE_AUTH_CACHE_MAX = 512


def node_authentication(
    src: Source,
    success: bool,
    peer_address: str,
    peer_identity: str = "",
    direction: str = "",
    reason: str = "",
    tls_version: str = "",
    cipher: str = "",
    when=None,
    calling_ae: str = "",
    called_ae: str = "",
) -> str:
    """A.5.3.11 Security Alert / Node Authentication (IHE ITI-19 success or failure).

    The peer is the requestor for inbound connections, the box for outbound ones. The AE
    titles of the association (when its A-ASSOCIATE-RQ was read) go on the participants: the
    calling AE on the requestor, the called AE on the other.
    """
    key = (
        src, success, peer_address, peer_identity, direction, reason, tls_version, cipher,
        calling_ae, called_ae,
    )  # fmt: skip
    parts = _NODE_AUTH_CACHE.get(key)
    if parts is None:
        if len(_NODE_AUTH_CACHE) >= _NODE_AUTH_CACHE_MAX:
            _NODE_AUTH_CACHE.clear()
        text = _node_authentication(
            src, success, peer_address, peer_identity, direction, reason, tls_version, cipher,
            _WHEN, calling_ae, called_ae,
        )  # fmt: skip
        # EventIdentification comes first, so the first occurrence is the time attribute even
        # if a peer's certificate subject happened to contain the marker.
        head, _, tail = text.partition(_WHEN)
        parts = _NODE_AUTH_CACHE[key] = (head, tail)
    return parts[0] + _escape(when or _now()) + parts[1]


def _node_authentication(
    src: Source,
    success: bool,
    peer_address: str,
    peer_identity: str = "",
    direction: str = "",
    reason: str = "",
    tls_version: str = "",
    cipher: str = "",
    when=None,
    calling_ae: str = "",
    called_ae: str = "",
) -> str:
    x = _Xml()
    x.open("AuditMessage", {})
    outcome = SUCCESS if success else MINOR_FAILURE
    description = reason if not success else ""
    _event(x, SECURITY_ALERT, NODE_AUTHENTICATION, outcome, when, description)
    inbound = direction == "inbound"
    box_ae, peer_ae = (called_ae, calling_ae) if inbound else (calling_ae, called_ae)
    _participant(x, src.process, not inbound, ROLE_APPLICATION, src.node_address, ae_title=box_ae)
    _participant(
        x,
        peer_identity or peer_address,
        inbound,
        ROLE_SOURCE if inbound else ROLE_DESTINATION,
        peer_address,
        ae_title=peer_ae,
    )
    _source(x, src)
    details = {"Alert Description": _alert_text(success, direction, reason)}
    if tls_version:
        details["TLS Version"] = tls_version
    if cipher:
        details["TLS Cipher"] = cipher
    _object(x, peer_address or "unknown", ID_TYPE_NODE, peer_identity or peer_address, details)
    x.close("AuditMessage")
    return str(x)


def _alert_text(success: bool, direction: str, reason: str) -> str:
    verdict = "succeeded" if success else f"failed: {reason or 'unknown reason'}"
    return f"TLS node authentication ({direction or 'unknown direction'}) {verdict}"


def configuration_change(
    src: Source,
    success: bool,
    what: str,
    detail: str,
    security: bool = True,
    when=None,
) -> str:
    """Security Alert / Security Configuration (certificates, trust, ACL) or Software
    Configuration (other settings); `what` names the changed object, e.g. a file path."""
    x = _Xml()
    x.open("AuditMessage", {})
    _event(
        x,
        SECURITY_ALERT,
        SECURITY_CONFIGURATION if security else SOFTWARE_CONFIGURATION,
        SUCCESS if success else MINOR_FAILURE,
        when,
        "" if success else detail,
    )
    _participant(x, src.process, True, ROLE_APPLICATION, src.node_address)
    _source(x, src)
    _object(x, what, ID_TYPE_URI, what, {"Alert Description": detail})
    x.close("AuditMessage")
    return str(x)
