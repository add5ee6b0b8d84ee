"""What a scan of the inbound listener must show, and the comparison with what testssl found.

No sockets here: `expected()` derives the suites from medtls' own profile data through OpenSSL,
`parse_testssl()` reads testssl's JSON, `violations()` compares both and applies the invariants of
PS3.15 B.12/B.13 and RFC 9325 that hold whatever profiles.py says.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field

PROTOCOL_IDS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")
ALLOWED_PROTOCOLS = frozenset({"TLS1_2", "TLS1_3"})

# TLS 1.3 suites per profile as PS3.15 lists them (IANA code points), independent of profiles.py.
TLS13_BY_STANDARD = {
    "bcp195": {0x1302, 0x1303, 0x1301},
    "bcp195-modified": {0x1302, 0x1303, 0x1301, 0x1304, 0x1305},
}

# Forward secrecy (ECDHE/DHE) and AEAD only: no static RSA, no CBC, no SHA-1 MAC.
TLS12_SHAPE = re.compile(
    r"^TLS_(ECDHE|DHE)_(RSA|ECDSA)_WITH_"
    r"(\w+_GCM_SHA(256|384)|AES_(128|256)_CCM(_8)?|CHACHA20_POLY1305_SHA256)$"
)
MIN_DH_BITS = 2048
MIN_ECDH_BITS = 253  # X25519

_AUTH_OF_KIND = {"rsa": "auth-rsa", "ec": "auth-ecdsa"}


@dataclass(frozen=True)
class Suite:
    code: int
    iana: str
    kx: str  # "ECDH 253", "DH 2048"


@dataclass
class ScanResult:
    protocols: dict[str, bool] = field(default_factory=dict)  # testssl id -> offered
    suites: dict[str, list[Suite]] = field(default_factory=dict)  # "TLS1_2"/"TLS1_3" -> suites
    errors: list[str] = field(default_factory=list)


def expected(profile_name: str, kind: str) -> dict[str, set[int]]:
    """Code points a server with a `kind` ("rsa"/"ec") key and this medtls profile must offer."""
    from medtls.config.profiles import PROFILES
    from medtls.tls.context import apply_profile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    apply_profile(ctx, PROFILES[profile_name])
    out: dict[str, set[int]] = {"TLS1_2": set(), "TLS1_3": set()}
    for c in ctx.get_ciphers():
        code = c["id"] & 0xFFFF
        if c["protocol"] == "TLSv1.3":
            out["TLS1_3"].add(code)
        elif c["auth"] == _AUTH_OF_KIND[kind]:
            out["TLS1_2"].add(code)
    return out


def parse_testssl(findings: list[dict]) -> ScanResult:
    res = ScanResult()
    for f in findings:
        fid, text = f.get("id", ""), f.get("finding", "")
        if fid in PROTOCOL_IDS:
            res.protocols[fid] = text.startswith("offered")
        elif m := re.fullmatch(r"cipher-(tls1_[23])_x([0-9a-f]+)", fid):
            cols = text.split()
            # "TLS 1.2   xc030   TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384   ECDH 253   AESGCM ..."
            iana = cols[3] if len(cols) > 3 else "?"
            kx = " ".join(cols[4:6]) if len(cols) > 5 else "?"
            res.suites.setdefault(m.group(1).upper(), []).append(
                Suite(int(m.group(2), 16), iana, kx)
            )
        elif f.get("severity") in ("FATAL", "ERROR") or fid.startswith("scanProblem"):
            res.errors.append(f"{fid}: {text}")
    return res


def _kx_bits(kx: str) -> int:
    m = re.search(r"(\d+)", kx)
    return int(m.group(1)) if m else 0


def violations(res: ScanResult, profile_name: str, want: dict[str, set[int]]) -> list[str]:
    """One line per way the scan differs from the profile; empty means compliant."""
    bad = list(res.errors)
    for proto in PROTOCOL_IDS:
        if proto not in res.protocols:
            bad.append(f"{proto}: not reported by the scanner")
        elif res.protocols[proto] != (proto in ALLOWED_PROTOCOLS):
            state = "offered" if res.protocols[proto] else "not offered"
            bad.append(f"{proto}: {state}")
    for proto in ("TLS1_2", "TLS1_3"):
        got = {s.code: s for s in res.suites.get(proto, [])}
        for code in sorted(set(got) - want[proto]):
            bad.append(f"{proto}: unexpected suite {got[code].iana} (0x{code:04x})")
        for code in sorted(want[proto] - set(got)):
            bad.append(f"{proto}: profile suite 0x{code:04x} not offered")
        for s in got.values():
            if proto == "TLS1_2" and not TLS12_SHAPE.match(s.iana):
                bad.append(f"{proto}: {s.iana} is not (EC)DHE with an AEAD cipher")
            floor = MIN_DH_BITS if s.kx.startswith("DH ") else MIN_ECDH_BITS
            if _kx_bits(s.kx) < floor:
                bad.append(f"{proto}: {s.iana} key exchange {s.kx} below {floor} bits")
    standard = TLS13_BY_STANDARD.get(profile_name)
    got13 = {s.code for s in res.suites.get("TLS1_3", [])}
    if standard is not None and got13 != standard:
        bad.append(
            f"TLS1_3: suites {sorted(map(hex, got13))} differ from PS3.15 "
            f"{sorted(map(hex, standard))}"
        )
    return bad
