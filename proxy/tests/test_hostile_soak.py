"""Live soak: 1,000 generated CA-signed hostile certificates presented in real handshakes to
one pair of running boxes (500 as a client, 500 as a server): zero daemon exits, and a good
connection interleaved every 50 hostile ones succeeds byte-exact."""

from __future__ import annotations

import os
import random
import time

from cryptography import x509
from hostile import TRIGGERS, der, leaf, odd_name, trigger
from hostile_bench import Bench

PER_DIRECTION = 500
GOOD_EVERY = 50
TIME_LIMIT = 240  # an upper bound only (a loaded 2-core machine takes well under it)


def certificates(bench: Bench, rng: random.Random, n: int):
    """Hostile triggers, odd but valid names, wildcards and CA flags, mixed."""
    for i in range(n):
        key = rng.randrange(len(bench.keys))
        kind = rng.choice((*TRIGGERS, "odd", "odd"))
        if kind == "odd":
            sans = rng.choice(([], [x509.DNSName("*.test")], [x509.DNSName("ris.test")]))
            cert = leaf(bench.issuer, bench.keys[key], name=odd_name(rng), sans=sans)
            yield i, der(cert), key
        else:
            yield i, trigger(kind, bench.issuer, bench.keys[key]), key


def test_a_thousand_hostile_certificates_do_not_stop_the_boxes(pki, tmp_path):
    rng = random.Random(int(os.environ.get("MEDTLS_SOAK_SEED", "16")))
    bench = Bench(pki, tmp_path)
    deadline = time.monotonic() + TIME_LIMIT
    try:
        for direction in ("inbound", "outbound"):
            for i, cert, key in certificates(bench, rng, PER_DIRECTION):
                if direction == "inbound":
                    bench.present_inbound(cert, key)
                else:
                    bench.present_outbound(cert, "evil", key)
                if i % GOOD_EVERY == GOOD_EVERY - 1:
                    assert bench.alive(), (bench.a.log(), bench.b.log())
                    payload = rng.randbytes(4096)
                    good = bench.good_inbound if direction == "inbound" else bench.good_outbound
                    assert good(payload) == payload, f"good {direction} connection after {i}"
                assert time.monotonic() < deadline, f"soak over its time bound at {direction} {i}"
        assert bench.alive()
        for m in (bench.a, bench.b):
            assert "Traceback" not in m.log()
        refused = bench.a.log().count("result=bad_certificate") + bench.b.log().count(
            "result=bad_certificate"
        )
        assert refused >= PER_DIRECTION  # most of the 1,000 are refused certificates
    finally:
        bench.close()
