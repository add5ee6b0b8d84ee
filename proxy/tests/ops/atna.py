"""Validation of DICOM PS3.15 A.5.1 audit messages: the standard's RELAX NG schema
(dicom-audit-message.rng, checked by libxml2 through lxml), the same structure re-checked in
plain Python with readable messages, and the event-specific rules of A.5.3.1 and A.5.3.11."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import xml.etree.ElementTree as ET
from pathlib import Path

from lxml import etree

_RNG = etree.RelaxNG(etree.parse(str(Path(__file__).with_name("dicom-audit-message.rng"))))

OUTCOMES = {"0", "4", "8", "12"}
ACTIONS = {"C", "R", "U", "D", "E"}
BOOLEANS = {"true", "false", "1", "0"}
CSD_OPTIONAL = {"displayName"}


def _coded(el, where, problems, code_required=True):
    attrs = set(el.attrib)
    for req in ("csd-code", "codeSystemName", "originalText"):
        if req not in attrs:
            problems.append(f"{where}: missing attribute {req}")
    extra = attrs - {"csd-code", "codeSystemName", "originalText"} - CSD_OPTIONAL
    if extra:
        problems.append(f"{where}: unexpected attributes {sorted(extra)}")
    if len(el):
        problems.append(f"{where}: must not have child elements")


def _datetime_ok(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in text


def _b64_ok(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _sequence(el, where, spec, problems):
    """spec: list of (tag, min, max); children must appear in this order."""
    children = list(el)
    i = 0
    for tag, lo, hi in spec:
        tags = tag if isinstance(tag, tuple) else (tag,)
        n = 0
        while i < len(children) and children[i].tag in tags and (hi is None or n < hi):
            n += 1
            i += 1
        if n < lo:
            problems.append(f"{where}: expected at least {lo} {'|'.join(tags)}, found {n}")
    for child in children[i:]:
        problems.append(f"{where}: unexpected or misplaced element {child.tag}")


def _attrs(el, where, required, optional, problems):
    for req in required:
        if req not in el.attrib:
            problems.append(f"{where}: missing attribute {req}")
    extra = set(el.attrib) - set(required) - set(optional)
    if extra:
        problems.append(f"{where}: unexpected attributes {sorted(extra)}")


def validate_relaxng(xml_text: str) -> list[str]:
    try:
        doc = etree.fromstring(xml_text.encode())
    except etree.XMLSyntaxError as exc:
        return [f"not well-formed XML: {exc}"]
    if _RNG.validate(doc):
        return []
    return [f"RELAX NG: {e.message} (line {e.line})" for e in _RNG.error_log]


def validate_schema(xml_text: str) -> list[str]:
    problems: list[str] = validate_relaxng(xml_text)
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]
    if root.tag != "AuditMessage":
        return [f"root element is {root.tag}, expected AuditMessage"]
    _sequence(
        root,
        "AuditMessage",
        [
            ("EventIdentification", 1, 1),
            ("ActiveParticipant", 1, None),
            ("AuditSourceIdentification", 1, 1),
            ("ParticipantObjectIdentification", 0, None),
        ],
        problems,
    )
    for ev in root.findall("EventIdentification"):
        w = "EventIdentification"
        _attrs(ev, w, ["EventDateTime", "EventOutcomeIndicator"], ["EventActionCode"], problems)
        if ev.get("EventActionCode", "E") not in ACTIONS:
            problems.append(f"{w}: bad EventActionCode {ev.get('EventActionCode')}")
        if ev.get("EventOutcomeIndicator") not in OUTCOMES:
            problems.append(f"{w}: bad EventOutcomeIndicator {ev.get('EventOutcomeIndicator')}")
        if not _datetime_ok(ev.get("EventDateTime", "")):
            problems.append(f"{w}: EventDateTime is not an xsd:dateTime")
        _sequence(
            ev,
            w,
            [("EventID", 1, 1), ("EventTypeCode", 0, None), ("EventOutcomeDescription", 0, 1)],
            problems,
        )
        for child in ev:
            if child.tag in ("EventID", "EventTypeCode"):
                _coded(child, f"{w}/{child.tag}", problems)
    for n, ap in enumerate(root.findall("ActiveParticipant")):
        w = f"ActiveParticipant[{n}]"
        _attrs(
            ap,
            w,
            ["UserID", "UserIsRequestor"],
            ["AlternativeUserID", "UserName", "NetworkAccessPointID", "NetworkAccessPointTypeCode"],
            problems,
        )
        if ap.get("UserIsRequestor") not in BOOLEANS:
            problems.append(f"{w}: UserIsRequestor is not an xsd:boolean")
        if ap.get("NetworkAccessPointTypeCode", "1") not in {"1", "2", "3", "4", "5"}:
            problems.append(f"{w}: bad NetworkAccessPointTypeCode")
        _sequence(ap, w, [("RoleIDCode", 0, None), ("MediaIdentifier", 0, 1)], problems)
        for role in ap.findall("RoleIDCode"):
            _coded(role, f"{w}/RoleIDCode", problems)
    for src in root.findall("AuditSourceIdentification"):
        w = "AuditSourceIdentification"
        _attrs(src, w, ["AuditSourceID"], ["AuditEnterpriseSiteID"], problems)
        _sequence(src, w, [("AuditSourceTypeCode", 0, None)], problems)
        for code in src.findall("AuditSourceTypeCode"):
            value = code.get("csd-code")
            if value is None:
                problems.append(f"{w}/AuditSourceTypeCode: missing csd-code")
            elif value not in set("123456789") and "codeSystemName" not in code.attrib:
                problems.append(f"{w}/AuditSourceTypeCode: {value} needs codeSystemName")
    for n, obj in enumerate(root.findall("ParticipantObjectIdentification")):
        w = f"ParticipantObjectIdentification[{n}]"
        _attrs(
            obj,
            w,
            ["ParticipantObjectID"],
            [
                "ParticipantObjectTypeCode",
                "ParticipantObjectTypeCodeRole",
                "ParticipantObjectDataLifeCycle",
                "ParticipantObjectSensitivity",
            ],
            problems,
        )
        if obj.get("ParticipantObjectTypeCode", "1") not in {"1", "2", "3", "4"}:
            problems.append(f"{w}: bad ParticipantObjectTypeCode")
        role = obj.get("ParticipantObjectTypeCodeRole")
        if role is not None and role not in {str(i) for i in range(1, 27)}:
            problems.append(f"{w}: bad ParticipantObjectTypeCodeRole")
        _sequence(
            obj,
            w,
            [
                ("ParticipantObjectIDTypeCode", 1, 1),
                (("ParticipantObjectName", "ParticipantObjectQuery"), 1, 1),
                ("ParticipantObjectDetail", 0, None),
                ("ParticipantObjectDescription", 0, None),
            ],
            problems,
        )
        for code in obj.findall("ParticipantObjectIDTypeCode"):
            _coded(code, f"{w}/ParticipantObjectIDTypeCode", problems)
        for detail in obj.findall("ParticipantObjectDetail"):
            _attrs(detail, f"{w}/ParticipantObjectDetail", ["type", "value"], [], problems)
            if not _b64_ok(detail.get("value", "")):
                problems.append(f"{w}/ParticipantObjectDetail: value is not base64")
    return problems


def _code(el) -> tuple[str, str] | None:
    return None if el is None else (el.get("csd-code"), el.get("codeSystemName"))


def validate_event(xml_text: str) -> list[str]:
    """Schema plus the DICOM-specific rules for the events medtls emits."""
    problems = validate_schema(xml_text)
    if problems:
        return problems
    root = ET.fromstring(xml_text)
    ev = root.find("EventIdentification")
    event_id = _code(ev.find("EventID"))
    types = [_code(t) for t in ev.findall("EventTypeCode")]
    participants = root.findall("ActiveParticipant")
    if event_id == ("110100", "DCM"):  # A.5.3.1 Application Activity
        if ev.get("EventActionCode") != "E":
            problems.append("Application Activity: EventActionCode must be E")
        if len(types) != 1 or types[0] not in {("110120", "DCM"), ("110121", "DCM")}:
            problems.append("Application Activity: EventTypeCode must be 110120 or 110121")
        apps = [p for p in participants if _code(p.find("RoleIDCode")) == ("110150", "DCM")]
        if len(apps) != 1:
            problems.append("Application Activity: exactly one participant with role 110150")
    elif event_id == ("110113", "DCM"):  # A.5.3.11 Security Alert
        if ev.get("EventActionCode") != "E":
            problems.append("Security Alert: EventActionCode must be E")
        if not types:
            problems.append("Security Alert: EventTypeCode is mandatory (DCID 403)")
        if not any(p.get("UserIsRequestor") in ("true", "1") for p in participants):
            problems.append("Security Alert: no reporting/requesting participant")
        for obj in root.findall("ParticipantObjectIdentification"):
            if obj.get("ParticipantObjectTypeCode") != "2":
                problems.append("Security Alert: Alert Subject must be a system object (2)")
        if ev.get("EventOutcomeIndicator") != "0" and ev.find("EventOutcomeDescription") is None:
            problems.append("Security Alert: failure without EventOutcomeDescription")
    else:
        problems.append(f"unexpected EventID {event_id}")
    return problems


def summary(xml_text: str) -> dict:
    root = ET.fromstring(xml_text)
    ev = root.find("EventIdentification")
    return {
        "event": ev.find("EventID").get("csd-code"),
        "types": [t.get("csd-code") for t in ev.findall("EventTypeCode")],
        "outcome": ev.get("EventOutcomeIndicator"),
        "participants": [p.attrib for p in root.findall("ActiveParticipant")],
        "objects": [
            o.get("ParticipantObjectID") for o in root.findall("ParticipantObjectIdentification")
        ],
        "details": {
            d.get("type"): base64.b64decode(d.get("value")).decode()
            for d in root.iter("ParticipantObjectDetail")
        },
    }
