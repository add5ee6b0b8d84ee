"""pynetdicom as the modality: one association with C-ECHO, the outcome printed as JSON.

python -m medlab.dicomscu HOST PORT CALLED_AE [--aet CALLING_AE]

{"established": bool, "rejected": bool, "aborted": bool, "result": int, "source": int,
 "reason": int, "echo_status": int}  (the A-ASSOCIATE-RJ fields when rejected, else null)
"""

from __future__ import annotations

import argparse
import json
import sys

from pynetdicom import AE
from pynetdicom.sop_class import Verification


def echo(host: str, port: int, called: str, calling: str) -> dict:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    assoc = ae.associate(host, port, ae_title=called)
    out = {"established": assoc.is_established, "rejected": assoc.is_rejected,
           "aborted": assoc.is_aborted, "result": None, "source": None, "reason": None,
           "echo_status": None}  # fmt: skip
    if assoc.is_rejected:
        rj = assoc.acceptor.primitive
        out.update(result=rj.result, source=rj.result_source, reason=rj.diagnostic)
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
