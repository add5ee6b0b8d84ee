"""pynetdicom as the modality: one association with C-ECHO, the outcome printed as JSON.

python -m medlab.dicomscu HOST PORT CALLED_AE [--aet CALLING_AE]

{"established": bool, "rejected": bool, "aborted": bool, "result": int, "source": int,
 "reason": int, "echo_status": int}  (the A-ASSOCIATE-RJ fields when rejected, else null)
"""

from __future__ import annotations

import argparse
import json
import sys

from pynetdicom import AE, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ
from pynetdicom.sop_class import Verification


def echo(host: str, port: int, called: str, calling: str) -> dict:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    # The A-ASSOCIATE-RJ as pynetdicom decoded it off the wire. pynetdicom's own verdict can be
    # "aborted" for a rejection that arrives at once: its reader thread closes the transport on
    # the RJ (PS3.8 AE-4) and the requesting thread, if it has not yet checked that the socket is
    # connected, then aborts (seen under load, with the box and without it).
    rjs: list[A_ASSOCIATE_RJ] = []

    def on_pdu(event):
        if isinstance(event.pdu, A_ASSOCIATE_RJ):
            rjs.append(event.pdu)

    assoc = ae.associate(host, port, ae_title=called, evt_handlers=[(evt.EVT_PDU_RECV, on_pdu)])
    out = {"established": assoc.is_established, "rejected": assoc.is_rejected or bool(rjs),
           "aborted": assoc.is_aborted and not rjs, "result": None, "source": None,
           "reason": None, "echo_status": None}  # fmt: skip
    if rjs:
        rj = rjs[0]
        out.update(result=rj.result, source=rj.source, reason=rj.reason_diagnostic)
    elif assoc.is_established:
        status = assoc.send_c_echo()
        out["echo_status"] = int(status.Status) if "Status" in status else None
        assoc.release()
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="dicomscu")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("called")
    p.add_argument("--aet", default="PYSCU")
    a = p.parse_args()
    print(json.dumps(echo(a.host, a.port, a.called, a.aet)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
