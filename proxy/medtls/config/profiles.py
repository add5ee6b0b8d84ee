"""DICOM PS3.15 Annex B TLS profiles as data (no ssl objects here).

Suite names are OpenSSL names. OpenSSL 3 implements no CAMELLIA-GCM suites, so B.13's CAMELLIA
entries cannot be offered; everything else of B.13 is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    min_version: str  # "TLSv1", "TLSv1_2", "TLSv1_3" (ssl.TLSVersion member names)
    max_version: str
    tls12_ciphers: str  # OpenSSL cipher string for TLS <= 1.2
    tls13_suites: str  # OpenSSL TLS 1.3 ciphersuites ("" = TLS 1.3 disabled)
    legacy: bool = False


TLS13_DEFAULT = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"
TLS13_MODIFIED = TLS13_DEFAULT + ":TLS_AES_128_CCM_SHA256:TLS_AES_128_CCM_8_SHA256"

# RFC 9325 section 4.2 recommended suites plus ChaCha20 (B.12).
BCP195_TLS12 = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
    ]
)

# PS3.15 B.13 TLS 1.2 list (minus CAMELLIA-GCM, absent from OpenSSL), DHE-RSA fallback last.
MODIFIED_TLS12 = ":".join(
    [
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-CCM",
        "ECDHE-ECDSA-AES256-CCM",
        "ECDHE-ECDSA-AES128-CCM8",
        "ECDHE-ECDSA-AES256-CCM8",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES128-CCM",
        "DHE-RSA-AES256-CCM",
        "DHE-RSA-CHACHA20-POLY1305",
    ]
)

NON_DOWNGRADING_TLS12 = ":".join(
    [
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    ]
)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "bcp195", "PS3.15 B.12 BCP 195 RFC 8996", "TLSv1_2", "TLSv1_3", BCP195_TLS12,
            TLS13_DEFAULT,
        ),
        Profile(
            "bcp195-modified", "PS3.15 B.13 Modified BCP 195 RFC 8996", "TLSv1_2", "TLSv1_3",
            MODIFIED_TLS12, TLS13_MODIFIED,
        ),
        Profile(
            "non-downgrading", "PS3.15 B.10 Non-Downgrading BCP 195 (retired)", "TLSv1_2",
            "TLSv1_3", NON_DOWNGRADING_TLS12, TLS13_DEFAULT, legacy=True,
        ),
        Profile(
            "aes-legacy", "PS3.15 B.3 AES (retired, TLS_RSA_WITH_AES_128_CBC_SHA)", "TLSv1",
            "TLSv1_2", "AES128-SHA:@SECLEVEL=0", "", legacy=True,
        ),
    )
}  # fmt: skip

LEGACY_PROFILES = frozenset(n for n, p in PROFILES.items() if p.legacy)


def tls13_suite_list(profile: Profile) -> list[str]:
    return [s for s in profile.tls13_suites.split(":") if s]


CHACHA20_TLS13 = "TLS_CHACHA20_POLY1305_SHA256"


def cpu_has_aes(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo text shows AES instructions (x86 `flags`, ARM `Features`).

    Unknown formats count as "has AES" so the profile's own order stays.
    """
    seen = False
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            seen = True
            if "aes" in value.split():
                return True
    return not seen


def client_tls13_order(suites: list[str], has_aes: bool) -> list[str]:
    """The profile's TLS 1.3 suites, ChaCha20-Poly1305 first when the CPU lacks AES instructions.

    Only reorders suites the profile already allows; never adds one.
    """
    if has_aes or CHACHA20_TLS13 not in suites:
        return list(suites)
    return [CHACHA20_TLS13] + [s for s in suites if s != CHACHA20_TLS13]
