"""`medtls probe PEER`: on installation day, do what the box would do for one outbound peer and
say what happened at each step: TCP (as the device in transparent mode, from the host in
explicit mode), TLS with the route's own context (built by THE validation, `material.validate`),
the chain, each `verify` rule (the daemon's policy functions), the TLS version and cipher, and
whether the peer accepted the box's certificate. Under TLS 1.3 a client learns that only from
the peer's first answer, so a DICOM peer gets an association with a C-ECHO (Verification) and an
HL7 peer, with --hl7-message, a harmless test message answered by an ACK.

Exit codes (docs/operations.md, "Commissioning: medtls probe") are in EXIT. A separate command:
it imports the engine's socket helpers only, never the loop.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field

from medtls.config import Config, ConfigError, OutboundPeer, load_config
from medtls.core import dicom, hl7
from medtls.core import events as ev
from medtls.core.certparse import CertParseError, parse_der
from medtls.core.outcomes import classify_tls_error, peer_alert
from medtls.core.policy import cert_identity, route_outbound, verify_results

# Outcome -> exit code; the docs' table is this one.
OK = "ok"
LOCAL_ERROR = "local_error"
CONFIG_ERROR = "config_error"
UNREACHABLE = "unreachable"
HANDSHAKE_FAILED = "handshake_failed"
PEER_CERT_REFUSED = "peer_certificate_refused"
WE_ARE_REFUSED = "peer_refused_our_certificate"
APPLICATION_REFUSED = "application_refused"
CLOCK_UNSYNCED = "clock_unsynchronised"
EXIT = {
    OK: 0,
    LOCAL_ERROR: 1,
    CONFIG_ERROR: 2,
    UNREACHABLE: 3,
    HANDSHAKE_FAILED: 4,
    PEER_CERT_REFUSED: 5,
    WE_ARE_REFUSED: 6,
    APPLICATION_REFUSED: 7,
    CLOCK_UNSYNCED: 8,
}
DEFAULT_CALLING_AE = "MEDTLS-PROBE"
DEFAULT_CALLED_AE = "ANY-SCP"
# TLS 1.3 without an application round trip: how long to wait for a refusal alert.
ALERT_WAIT = 1.5

# What a TLS error category (classify_tls_error) means for the probe.
_OUR_VERIFY = {ev.UNKNOWN_CA, ev.CERT_EXPIRED, ev.CERT_REVOKED, ev.CERT_PURPOSE,
               ev.BAD_CERTIFICATE, ev.CRL_UNUSABLE, ev.IDENTITY_MISMATCH}  # fmt: skip
_THEY_REFUSE = {ev.PEER_REJECTED, ev.PEER_UNKNOWN_CA, ev.PEER_CERT_EXPIRED,
                ev.PEER_CERT_REVOKED, ev.NO_CERTIFICATE}  # fmt: skip


def outcome_of_tls_error(category: str) -> str:
    if category in _OUR_VERIFY:
        return PEER_CERT_REFUSED
    if category in _THEY_REFUSE:
        return WE_ARE_REFUSED
    return HANDSHAKE_FAILED


@dataclass
class Report:
    peer: str
    route: str = ""
    address: str = ""
    port: int = 0
    protocol: str = "tcp"
    mode: str = ""
    profile: str = ""
    sni: str | None = None
    source: str = ""  # "198.18.0.10 (device identity)" or "host"
    clock: str = ""
    tcp: dict = field(default_factory=dict)
    tls: dict = field(default_factory=dict)
    chain: list = field(default_factory=list)
    verify: dict = field(default_factory=dict)
    peer_accepted_us: bool | None = None
    peer_accepted_detail: str = ""
    dicom: dict = field(default_factory=dict)
    hl7: dict = field(default_factory=dict)
    outcome: str = OK
    detail: str = ""
    exit_code: int = 0

    def finish(self, outcome: str, detail: str = "") -> Report:
        self.outcome, self.detail, self.exit_code = outcome, detail, EXIT[outcome]
        return self


def register(sub) -> None:
    p = sub.add_parser(
        "probe",
        help="commissioning: connect to an outbound peer as the box would and report each step",
    )
    p.add_argument("peer", help="a configured outbound peer name, or ADDRESS:PORT of its route")
    p.add_argument("--config", "-c", default="/etc/medtls/medtls.yaml", help="YAML configuration")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--calling-ae", help=f"DICOM calling AE title (default {DEFAULT_CALLING_AE})")
    p.add_argument("--called-ae", help=f"DICOM called AE title (default {DEFAULT_CALLED_AE})")
    p.add_argument(
        "--dicom",
        action="store_true",
        help="treat the peer as DICOM (C-ECHO) whatever its protocol",
    )
    p.add_argument(
        "--hl7-message",
        action="store_true",
        help="send an HL7 test message (NMQ^N01), read its ACK",
    )
    p.add_argument("--device-ip", help="the device's address when device.ip is auto")
    p.add_argument("--timeout", type=float, help="seconds per step (default: limits.*_timeout)")
    p.set_defaults(func=cmd_probe)


def find_peer(config: Config, text: str) -> OutboundPeer | None:
    """A peer by name, or by ADDRESS:PORT: the port the device dials (the route the daemon
    would take) or, failing that, the peer's TLS port."""
    for peer in config.outbound:
        if peer.name == text:
            return peer
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    host = host.strip("[]")
    try:
        peer = route_outbound(config, host, int(port))
    except ValueError:
        return None
    if peer is None:
        peer = next((p for p in config.outbound if p.address == host and p.tls_port == int(port)),
                    None)  # fmt: skip
    return peer


def cmd_probe(args) -> int:
    report = probe(args)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(render(report))
    return report.exit_code


def _source(config: Config, args) -> str | None:
    """The address the box's leg leaves from (the device's) or None (from the host)."""
    if config.mode != "transparent" or config.interception != "tproxy":
        return None
    if args.device_ip:
        return args.device_ip
    if config.device.ip is not None:
        return config.device.ip
    from medtls.interception.learnio import DEFAULT_STATE, load_state

    learned = load_state(DEFAULT_STATE)
    if learned is None:
        raise ConfigError([f"device.ip is auto and {DEFAULT_STATE} has no learned device: "
                           "give --device-ip"])  # fmt: skip
    return learned.ip


def probe(args) -> Report:
    report = Report(peer=args.peer)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        return report.finish(CONFIG_ERROR, "; ".join(str(p) for p in e.problems))
    peer = find_peer(config, args.peer)
    if peer is None:
        names = ", ".join(p.name for p in config.outbound) or "none"
        return report.finish(CONFIG_ERROR, f"no outbound peer {args.peer!r} (configured: {names})")
    report.route, report.address, report.port = peer.name, peer.address, peer.tls_port
    report.protocol = "dicom" if args.dicom else peer.protocol
    report.mode = config.mode
    report.sni = peer.sni
    if peer.plaintext:
        return report.finish(CONFIG_ERROR, f"outbound peer {peer.name!r} is plaintext: no TLS")
    report.profile = config.outbound_profile(peer)
    from medtls.tls.context import TLSSetupError
    from medtls.tls.material import validate

    try:
        ctx = validate(config).outbound_ctx[peer.name]
        source = _source(config, args)
    except TLSSetupError as e:
        return report.finish(CONFIG_ERROR, str(e))
    except ConfigError as e:
        return report.finish(CONFIG_ERROR, "; ".join(str(p) for p in e.problems))
    except Exception as e:  # the learned-state file: InterceptionError
        return report.finish(CONFIG_ERROR, str(e))
    report.source = f"{source} (device identity)" if source else "host"
    clock_ok = _clock(config, report)
    limits = config.limits
    connect_timeout = args.timeout or limits.connect_timeout
    step_timeout = args.timeout or limits.handshake_timeout
    sock = _connect(report, peer, source, connect_timeout, limits.keepalive)
    if sock is None:
        return report
    try:
        tls = _handshake(report, ctx, sock, peer, step_timeout)
        if tls is None:
            return report
        sock = tls
        if not _verify(report, peer, tls):
            return report
        _acceptance(report, args, peer, tls, step_timeout)
    finally:
        sock.close()
    if report.outcome == OK and not clock_ok:
        return report.finish(CLOCK_UNSYNCED, report.clock)
    return report


def _clock(config: Config, report: Report) -> bool:
    from medtls.ops import clock

    state = clock.read_state(config.ops.clock.sync_file, config.ops.clock.not_before)
    allowed, reason = clock.validation_allowed(state, config.ops.clock.require_sync)
    report.clock = reason
    return allowed


def _ms(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)


def _connect(report, peer, source, timeout, keepalive) -> socket.socket | None:
    from medtls.engine.netutil import upstream_socket

    try:
        sock = upstream_socket(peer.address, keepalive, source)
    except OSError as e:
        why = e.strerror or str(e)
        hint = " (a transparent socket needs root or CAP_NET_ADMIN)" if source else ""
        report.finish(LOCAL_ERROR, f"cannot create the socket{hint}: {why}")
        return None
    sock.settimeout(timeout)
    t0 = time.monotonic()
    try:
        sock.connect((peer.address, peer.tls_port))
    except TimeoutError:
        sock.close()
        report.tcp = {"ok": False, "error": f"no answer within {timeout:g} s"}
        report.finish(UNREACHABLE, f"TCP {peer.address}:{peer.tls_port}: {report.tcp['error']}")
        return None
    except OSError as e:
        sock.close()
        report.tcp = {"ok": False, "error": e.strerror or str(e)}
        report.finish(UNREACHABLE, f"TCP {peer.address}:{peer.tls_port}: {report.tcp['error']}")
        return None
    report.tcp = {"ok": True, "ms": _ms(t0), "local": "{}:{}".format(*sock.getsockname()[:2])}
    return sock


def _chain_of(tls: ssl.SSLSocket, verified: bool) -> list[bytes]:
    sslobj = getattr(tls, "_sslobj", None)
    getter = getattr(sslobj, "get_verified_chain" if verified else "get_unverified_chain", None)
    try:
        chain = getter() if getter is not None else None
    except (ssl.SSLError, ValueError):
        chain = None
    if chain:
        return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]
    leaf = None
    with contextlib.suppress(ValueError, ssl.SSLError):
        leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _describe_chain(ders: list[bytes]) -> list[dict]:
    out = []
    for der in ders:
        try:
            f = parse_der(der)
        except CertParseError as e:
            out.append({"error": str(e)})
            continue
        out.append({
            "subject": f.subject, "issuer": f.issuer,
            "not_before": f.not_before.isoformat() if f.not_before else "",
            "not_after": f.not_after.isoformat(), "dns": list(f.dns), "ip": list(f.ips),
            "uri": list(f.uris), "spki_sha256": f.spki_sha256, "ca": f.ca,
        })  # fmt: skip
    return out


def _handshake(report, ctx, sock, peer, timeout) -> ssl.SSLSocket | None:
    t0 = time.monotonic()
    tls = ctx.wrap_socket(sock, server_hostname=peer.sni, do_handshake_on_connect=False)
    tls.settimeout(timeout)
    try:
        tls.do_handshake()
    except TimeoutError:
        report.tls = {"ok": False, "error": f"no handshake within {timeout:g} s"}
        report.finish(HANDSHAKE_FAILED, report.tls["error"])
        tls.close()
        return None
    except ssl.SSLError as e:
        category, detail = classify_tls_error(e)
        report.tls = {"ok": False, "category": category, "error": detail}
        alert = peer_alert(getattr(e, "reason", None) or "")
        if alert:
            report.tls["alert"] = {"name": alert[0], "code": alert[1]}
        outcome = outcome_of_tls_error(category)
        if outcome == PEER_CERT_REFUSED:
            report.chain = _describe_chain(_chain_of(tls, verified=False))
            report.verify = {"chain": {"ok": False, "detail": detail}, "rules": []}
        if outcome == WE_ARE_REFUSED:
            report.peer_accepted_us, report.peer_accepted_detail = False, detail
        report.finish(outcome, detail)
        tls.close()
        return None
    except OSError as e:
        report.tls = {"ok": False, "error": f"{e.strerror or e} during the TLS handshake"}
        report.finish(HANDSHAKE_FAILED, report.tls["error"])
        tls.close()
        return None
    cipher = tls.cipher() or ("", "", 0)
    report.tls = {"ok": True, "ms": _ms(t0), "version": tls.version() or "", "cipher": cipher[0]}
    return tls


def _verify(report: Report, peer: OutboundPeer, tls: ssl.SSLSocket) -> bool:
    """The chain (OpenSSL verified it in the handshake) and each rule of `verify`, by the
    daemon's own functions; False (report finished) when the box would refuse the peer."""
    ders = _chain_of(tls, verified=True)
    report.chain = _describe_chain(ders)
    ca = "verify.ca" if peer.verify and peer.verify.ca else "trust.ca"
    report.verify = {"chain": {"ok": True, "detail": f"chains to {ca}"}, "rules": []}
    try:
        ident = cert_identity(ders[0])
        if ident.ca:
            raise CertParseError("a CA certificate (basicConstraints cA=TRUE) is not a peer")
    except (CertParseError, IndexError) as e:
        report.finish(PEER_CERT_REFUSED, f"peer certificate refused: {e}")
        return False
    rules = verify_results(peer.verify, ident) if peer.verify else []
    report.verify["rules"] = [{"rule": k, "expected": want, "ok": bad is None, "detail": bad or ""}
                              for k, want, bad in rules]  # fmt: skip
    failed = [f"verify.{k}: {bad}" for k, _want, bad in rules if bad is not None]
    if failed:
        report.finish(PEER_CERT_REFUSED, "; ".join(failed))
        return False
    return True


def _acceptance(report, args, peer, tls, timeout) -> None:
    tls13 = report.tls.get("version") == "TLSv1.3"
    if report.protocol == "dicom":
        _dicom(report, args, tls, timeout, tls13)
    elif report.protocol == "hl7" and args.hl7_message:
        _hl7(report, tls, timeout, tls13)
    elif not tls13:
        # TLS 1.2: the server verified our certificate before its Finished.
        report.peer_accepted_us = True
        report.peer_accepted_detail = "TLS 1.2 handshake completed (the peer verified us in it)"
    else:
        _wait_for_alert(report, tls)
    if report.outcome == OK and report.peer_accepted_us is None and tls13:
        report.peer_accepted_detail = (
            f"no refusal within {ALERT_WAIT:g} s; under TLS 1.3 only an application round trip "
            "proves it (--dicom, or --hl7-message for an HL7 peer)"
        )


def _refused_at_read(report: Report, e: Exception, tls13: bool, when: str) -> bool:
    """A TLS error or close at the first read: under TLS 1.3 the peer's verdict on us."""
    if isinstance(e, ssl.SSLError) and not isinstance(e, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        category, detail = classify_tls_error(e)
        alert = peer_alert(getattr(e, "reason", None) or "")
        if alert:
            report.tls["alert"] = {"name": alert[0], "code": alert[1]}
        outcome = outcome_of_tls_error(category)
        if outcome == WE_ARE_REFUSED or (tls13 and alert):
            report.peer_accepted_us, report.peer_accepted_detail = False, f"{detail} ({when})"
            report.finish(WE_ARE_REFUSED, f"{detail} ({when})")
            return True
        report.finish(HANDSHAKE_FAILED, f"{detail} ({when})")
        return True
    if tls13:
        detail = (f"the peer closed the connection {when}, without an answer (under TLS 1.3: "
                  "usually its refusal of our certificate without an alert)")  # fmt: skip
        report.peer_accepted_us, report.peer_accepted_detail = False, detail
        report.finish(WE_ARE_REFUSED, detail)
        return True
    return False


def _wait_for_alert(report: Report, tls: ssl.SSLSocket) -> None:
    tls.settimeout(ALERT_WAIT)
    try:
        data = tls.recv(1)
    except TimeoutError:
        return
    except (ssl.SSLError, OSError) as e:
        if not _refused_at_read(report, e, True, "right after the handshake"):
            report.finish(HANDSHAKE_FAILED, str(e))
        return
    if data:
        report.peer_accepted_us, report.peer_accepted_detail = True, "the peer sent data"
    else:
        _refused_at_read(report, ssl.SSLEOFError(), True, "right after the handshake")


class _Reader:
    """Bounded reads of whole DICOM PDUs or one MLLP frame from the TLS socket."""

    def __init__(self, tls: ssl.SSLSocket, timeout: float):
        self.tls, self.buf, self.timeout = tls, b"", timeout

    def _more(self, deadline: float) -> bytes:
        self.tls.settimeout(max(0.01, deadline - time.monotonic()))
        return self.tls.recv(65536)

    def pdu(self) -> dicom.Pdu | None:
        deadline = time.monotonic() + self.timeout
        while True:
            pdu = dicom.read_pdu(self.buf)
            if pdu is not None:
                self.buf = self.buf[pdu.size :]
                return pdu
            chunk = self._more(deadline)
            if not chunk:
                return None
            self.buf += chunk

    def frame(self) -> bytes | None:
        deadline = time.monotonic() + self.timeout
        while True:
            msg = hl7.mllp_frame(self.buf, hl7.MAX_FRAME)
            if msg is not None:
                return msg
            chunk = self._more(deadline)
            if not chunk:
                return None
            self.buf += chunk


def _first_answer(report, read, tls13: bool, what: str):
    """The peer's first answer, or None with the report finished."""
    try:
        got = read()
    except TimeoutError:
        report.finish(APPLICATION_REFUSED, f"no answer to the {what} within the timeout")
        return None
    except (dicom.DicomError, hl7.Hl7Error) as e:
        report.peer_accepted_us = True  # it answered in its protocol over our TLS
        report.finish(APPLICATION_REFUSED, f"malformed answer to the {what}: {e}")
        return None
    except (ssl.SSLError, OSError) as e:
        if not _refused_at_read(report, e, tls13, f"after our {what}"):
            report.finish(APPLICATION_REFUSED, f"{e} after our {what}")
        return None
    if got is None and _refused_at_read(report, ssl.SSLEOFError(), tls13, f"after our {what}"):
        return None
    if got is None:
        report.finish(APPLICATION_REFUSED, f"the peer closed the connection after our {what}")
        return None
    report.peer_accepted_us = True
    return got


def _dicom(report, args, tls, timeout, tls13) -> None:
    calling = args.calling_ae or DEFAULT_CALLING_AE
    called = args.called_ae or DEFAULT_CALLED_AE
    d = report.dicom = {"calling_ae": calling, "called_ae": called}
    try:
        rq = dicom.associate_rq(calling, called)
    except ValueError as e:
        report.finish(CONFIG_ERROR, str(e))
        return
    reader = _Reader(tls, timeout)
    try:
        tls.sendall(rq)
    except (ssl.SSLError, OSError) as e:
        if not _refused_at_read(report, e, tls13, "while we sent the A-ASSOCIATE-RQ"):
            report.finish(APPLICATION_REFUSED, f"{e} sending the A-ASSOCIATE-RQ")
        return
    pdu = _first_answer(report, reader.pdu, tls13, "A-ASSOCIATE-RQ")
    if pdu is None:
        return
    report.peer_accepted_detail = f"the peer answered our A-ASSOCIATE-RQ ({pdu.name})"
    try:
        _association(report, d, reader, tls, pdu)
    except TimeoutError:
        report.finish(APPLICATION_REFUSED, "the peer stopped answering during the association")
    except dicom.DicomError as e:
        report.finish(APPLICATION_REFUSED, f"malformed DICOM answer: {e}")
    except (ssl.SSLError, OSError) as e:
        report.finish(APPLICATION_REFUSED, f"{e} during the association")


def _association(report, d, reader, tls, pdu) -> None:
    d["answer"] = pdu.name
    if pdu.kind == dicom.A_ASSOCIATE_RJ:
        d["reject"] = dicom.describe_any_rj(*dicom.read_rj(pdu))
        report.finish(APPLICATION_REFUSED, f"A-ASSOCIATE-RJ: {d['reject']}")
        return
    if pdu.kind == dicom.A_ABORT:
        d["abort"] = dicom.describe_abort(*dicom.read_abort(pdu))
        report.finish(APPLICATION_REFUSED, f"A-ABORT: {d['abort']}")
        return
    ac = dicom.read_associate_ac(pdu)
    result = ac.result_of(1)
    d["context"] = dicom.CONTEXT_RESULTS.get(result, "not answered") if result is not None else (
        "not answered")  # fmt: skip
    if result != 0:
        reader.tls.sendall(dicom.a_abort(dicom.ABORT_USER))
        report.finish(APPLICATION_REFUSED, f"Verification SOP class not accepted: {d['context']}")
        return
    message_id = 1
    tls.sendall(dicom.p_data(1, dicom.c_echo_rq(message_id), command=True))
    command = b""
    while True:
        answer = reader.pdu()
        if answer is None:
            report.finish(APPLICATION_REFUSED, "the peer closed the association during C-ECHO")
            return
        if answer.kind == dicom.A_ABORT:
            d["abort"] = dicom.describe_abort(*dicom.read_abort(answer))
            report.finish(APPLICATION_REFUSED, f"A-ABORT during C-ECHO: {d['abort']}")
            return
        last = False
        for pdv in dicom.read_pdvs(answer):
            if pdv.command:
                command += pdv.data
                last = last or pdv.last
        if len(command) > dicom.MAX_COMMAND:
            raise dicom.DicomError("C-ECHO-RSP command set too long")
        if last:
            break
    status = dicom.c_echo_status(command, message_id)
    d["c_echo_status"] = f"0x{status:04x} {dicom.describe_status(status)}"
    tls.sendall(dicom.release_rq())
    try:
        rp = reader.pdu()
        d["released"] = rp is not None and rp.kind == dicom.A_RELEASE_RP
    except (dicom.DicomError, ssl.SSLError, OSError):
        d["released"] = False
    if status != 0:
        report.finish(APPLICATION_REFUSED, f"C-ECHO status {d['c_echo_status']}")


def _hl7(report, tls, timeout, tls13) -> None:
    control_id = "MEDTLS" + secrets.token_hex(6).upper()
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
    message = hl7.probe_message(control_id, stamp)
    h = report.hl7 = {"sent": hl7.PROBE_MESSAGE_TYPE, "control_id": control_id}
    try:
        tls.sendall(hl7.frame(message))
    except (ssl.SSLError, OSError) as e:
        if not _refused_at_read(report, e, tls13, "while we sent the HL7 message"):
            report.finish(APPLICATION_REFUSED, f"{e} sending the HL7 message")
        return
    msg = _first_answer(report, _Reader(tls, timeout).frame, tls13, "HL7 message")
    if msg is None:
        return
    report.peer_accepted_detail = "the peer answered our HL7 message"
    try:
        ack = hl7.read_ack(msg)
    except hl7.Hl7Error as e:
        report.finish(APPLICATION_REFUSED, f"answer to the HL7 message is not an ACK: {e}")
        return
    h.update(ack=ack.code, ack_text=ack.text, ack_for=ack.control_id)
    if ack.control_id != control_id:
        report.finish(APPLICATION_REFUSED, f"ACK for {ack.control_id!r}, not {control_id!r}")
    elif ack.code not in ("AA", "CA"):
        report.finish(APPLICATION_REFUSED, f"HL7 ACK {ack.code}: {ack.text}")


def render(r: Report) -> str:
    """The human report: one line per step, then the verdict."""
    lines = [f"medtls probe {r.peer}"]
    if r.route:
        lines.append(f"  route     {r.route} -> {r.address}:{r.port} (protocol {r.protocol}, "
                     f"profile {r.profile or '-'}, SNI {r.sni or 'none'})")  # fmt: skip
    if r.source:
        lines.append(f"  source    {r.source}, {r.mode} mode")
    if r.clock:
        lines.append(f"  clock     {r.clock}")
    if r.tcp:
        if r.tcp.get("ok"):
            lines.append(f"  tcp       connected in {r.tcp['ms']} ms from {r.tcp['local']}")
        else:
            lines.append(f"  tcp       FAILED: {r.tcp['error']}")
    if r.tls:
        if r.tls.get("ok"):
            lines.append(f"  tls       {r.tls['version']} {r.tls['cipher']} in {r.tls['ms']} ms")
        else:
            lines.append(f"  tls       FAILED: {r.tls['error']}")
    for i, c in enumerate(r.chain):
        if "error" in c:
            lines.append(f"  cert[{i}]   unreadable: {c['error']}")
            continue
        san = ", ".join([f"DNS:{n}" for n in c["dns"]] + [f"IP:{n}" for n in c["ip"]]
                        + [f"URI:{n}" for n in c["uri"]])  # fmt: skip
        lines.append(f"  cert[{i}]   subject {c['subject']}")
        lines.append(f"            issuer  {c['issuer']}")
        lines.append(f"            valid   {c['not_before'][:19]} .. {c['not_after'][:19]} UTC")
        if san:
            lines.append(f"            SAN     {san}")
        if i == 0:
            lines.append(f"            SPKI sha256 {c['spki_sha256']}")
    if r.verify:
        ch = r.verify["chain"]
        lines.append(f"  verify    chain: {'ok' if ch['ok'] else 'REFUSED'} ({ch['detail']})")
        for rule in r.verify["rules"]:
            state = "ok" if rule["ok"] else f"MISMATCH: {rule['detail']}"
            lines.append(f"            {rule['rule']} {rule['expected']}: {state}")
    if r.peer_accepted_us is not None or r.peer_accepted_detail:
        said = {True: "yes", False: "NO", None: "not refused"}[r.peer_accepted_us]
        lines.append(f"  accepted  {said}: {r.peer_accepted_detail}")
    if r.dicom:
        d = r.dicom
        text = f"{d['calling_ae']} -> {d['called_ae']}"
        for key in ("answer", "context", "reject", "abort", "c_echo_status"):
            if key in d:
                text += f"; {key.replace('_', ' ')} {d[key]}"
        if "released" in d:
            text += "; released" if d["released"] else "; release not confirmed"
        lines.append(f"  dicom     {text}")
    if r.hl7:
        h = r.hl7
        text = f"sent {h['sent']} {h['control_id']}"
        if "ack" in h:
            text += f"; ACK {h['ack']}" + (f" ({h['ack_text']})" if h["ack_text"] else "")
        lines.append(f"  hl7       {text}")
    verdict = "OK" if r.outcome == OK else r.outcome.replace("_", " ").upper()
    lines.append(f"result: {verdict} (exit {r.exit_code})" + (f": {r.detail}" if r.detail else ""))
    return "\n".join(lines)
