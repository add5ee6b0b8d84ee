"""Fuzz what `medtls crl-fetch` reads from the network and from its state file: a fetched body
(`crl.one_der` then `crl.examine` against the test CAs) and `crlstate.parse_state`.

Promised: a CrlMeta or CrlRejected (never another exception); a CrlMeta only for a CRL whose
issuer is one of the CAs; parse_state gives a state or StateError.
"""

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testpki"))

with atheris.instrument_imports():
    from medtls.core.crlstate import StateError, parse_state
    from medtls.enroll.crl import CrlRejected, examine, one_der

import medtls_testpki as testpki
from cryptography.hazmat.primitives.serialization import Encoding

ROOT = testpki.make_ca("Fuzz Root CA", days=30)
CAS = [ROOT.cert]
SIGNED = testpki.make_crl(ROOT).public_bytes(Encoding.DER)


def TestOneInput(data: bytes) -> None:
    if data[:1] == b"{":
        try:
            parse_state(data)
        except StateError as e:
            if not str(e):
                raise AssertionError("a refusal must say why") from None
        return
    if data[:1] == b"!":  # a mutation of a CRL the CA really signed
        data = SIGNED[: len(data)] + data[1:]
    try:
        meta = examine(one_der(data), CAS)
    except CrlRejected as e:
        if not str(e):
            raise AssertionError("a refusal must say why") from None
        return
    if meta.issuer != ROOT.cert.subject.rfc4514_string():
        raise AssertionError("accepted a CRL of another issuer")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
