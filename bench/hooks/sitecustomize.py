"""Benchmark-only hook, loaded by the medtls processes the harness starts (PYTHONPATH).

medtls takes its TLS 1.3 suites from the DICOM profile (AES-256-GCM first, server preference)
and has no setting to pin one suite. To compare every contender on the same cipher (the
ChaCha20-Poly1305 run stands for a Pi 4 without AES instructions), the harness narrows each
profile's TLS 1.3 list to MEDTLS_BENCH_TLS13_SUITES. Nothing else changes; the harness checks
the negotiated suite on every run.
"""

import dataclasses
import os

_suites = os.environ.get("MEDTLS_BENCH_TLS13_SUITES")
if _suites:
    try:
        from medtls.config import profiles
    except ImportError:  # a MEDTLS_BENCH_BASELINE from before the package had wings
        from medtls import profiles

    for _name, _profile in list(profiles.PROFILES.items()):
        if _profile.tls13_suites:
            profiles.PROFILES[_name] = dataclasses.replace(_profile, tls13_suites=_suites)
