"""Installing an enrolled certificate: `enroll.install.check_issued` refuses every bad issued
chain with a specific reason, `install` swaps the live pair atomically, and the daemon's
validation (tls.material) reads both files from one generation."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from medtls.config import parse_config
from medtls.enroll import keys
from medtls.enroll.install import (
    IssuedCertificateRejected,
    check_issued,
    generations,
    install,
    notify_daemon,
)
from medtls.tls.material import pinned_identity, validate
from medtls_testpki import EXPIRED, make_leaf, pem

DEVICE = "198.18.0.10"
ROOT = Path(__file__).resolve().parents[1]


def _config(pki, state_dir: Path, **over):
    raw = {
        "device": {"ip": DEVICE},
        "mode": "explicit",
        "trust": {"ca": str(pki.ca)},
        "outbound": [{"name": "pacs", "address": "127.0.0.1", "listen": "127.0.0.1:11104",
                      "tls_port": 2762, "verify": {"cn": "pacs"}}],
        "inbound": [{"name": "ris", "listen": "127.0.0.1:12762", "port": 2762,
                     "allow": [{"cn": "ris"}]}],
        "control": {"socket": str(state_dir / "control.sock")},
        "enrollment": {"acme": {"directory": "https://ca.test/acme/directory"},
                       "state_dir": str(state_dir)},
        **over,
    }  # fmt: skip
    return parse_config(raw, state_dir / "medtls.yaml")


def _pem(*items) -> bytes:
    return b"".join(pem(i) for i in items)


def _issued(pki, issuer=None, **options):
    options = {"ips": (DEVICE,), **options}
    leaf = make_leaf("ct", issuer or pki.root, **options)
    return pem(leaf.key), _pem(leaf.cert), leaf


@pytest.fixture
def cfg(pki, tmp_path):
    return _config(pki, tmp_path)


def test_a_good_issued_chain_passes(pki, cfg):
    key, chain, _ = _issued(pki)
    check_issued(cfg, key, chain)


def test_keys_and_csr_carry_the_identifiers():
    for key_type in ("ec-p256", "ec-p384", "rsa-2048"):
        csr = x509.load_pem_x509_csr(keys.make_csr(keys.new_key(key_type), [DEVICE], ["ct.test"]))
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == [DEVICE]
        assert san.get_values_for_type(x509.DNSName) == ["ct.test"]
        assert csr.is_signature_valid


@pytest.mark.parametrize(
    "case, expected",
    [
        ("wrong key", "its public key is not the key generated for this order"),
        ("no clientAuth", "extended key usage lacks clientAuth (outbound TLS routes)"),
        ("no serverAuth", "extended key usage lacks serverAuth (inbound TLS ports)"),
        ("wrong CA", "refused by the identity validation"),
        ("expired", "expired on"),
        ("no IP SAN", f"IP SAN {DEVICE} missing"),
        ("garbage", "holds no certificate"),
    ],
)
def test_check_issued_refuses_each_bad_case(pki, cfg, case, expected):
    key, chain, _ = _issued(pki)
    if case == "wrong key":
        key = pem(make_leaf("other", pki.root, ips=(DEVICE,)).key)
    elif case == "no clientAuth":
        key, chain, _ = _issued(pki, eku=("server",))
    elif case == "no serverAuth":
        key, chain, _ = _issued(pki, eku=("client",))
    elif case == "wrong CA":
        key, chain, _ = _issued(pki, issuer=pki.rogue)
    elif case == "expired":
        key, chain, _ = _issued(pki, **EXPIRED)
    elif case == "no IP SAN":
        key, chain, _ = _issued(pki, ips=("198.18.0.11",))
    elif case == "garbage":
        chain = b"not a certificate\n"
    with pytest.raises(IssuedCertificateRejected) as e:
        check_issued(cfg, key, chain)
    assert expected in str(e.value)


def test_install_swaps_live_and_keeps_two_generations(pki, cfg, tmp_path):
    serials = []
    for _ in range(3):
        key, chain, leaf = _issued(pki)
        gen = install(cfg, key, chain)
        serials.append(format(leaf.cert.serial_number, "x"))
        live = tmp_path / "live"
        assert live.is_symlink() and live.resolve() == gen
        assert (live / "fullchain.pem").read_bytes() == chain
        assert (live / "key.pem").read_bytes() == key
        assert not (os.stat(live / "key.pem").st_mode & 0o007)
    assert len(generations(tmp_path)) == 2
    rt = validate(cfg)
    assert rt.certificates[0].serial == serials[-1]


def test_failed_check_keeps_the_installed_certificate(pki, cfg, tmp_path):
    key, chain, _ = _issued(pki)
    install(cfg, key, chain)
    bad_key, bad_chain, _ = _issued(pki, issuer=pki.rogue)
    with pytest.raises(IssuedCertificateRejected):
        check_issued(cfg, bad_key, bad_chain)
    assert (tmp_path / "live" / "fullchain.pem").read_bytes() == chain


def test_a_reload_during_install_never_sees_a_mismatched_pair(pki, cfg):
    pairs = [_issued(pki)[:2] for _ in range(2)]
    install(cfg, *pairs[0])
    stop = threading.Event()

    def swap():
        i = 0
        while not stop.is_set() and i < 400:
            i += 1
            install(cfg, *pairs[i % 2])

    t = threading.Thread(target=swap)
    t.start()
    try:
        for _ in range(400):
            ident = pinned_identity(cfg.identity)
            try:
                got = (ident.key.read_bytes(), ident.certificate.read_bytes())
            except FileNotFoundError:
                continue  # pruned after the pin: the reload fails and keeps its generation
            assert got in pairs, "certificate and key from different generations"
    finally:
        stop.set()
        t.join(30)


def test_notify_daemon_without_a_daemon_is_not_an_error(cfg):
    assert notify_daemon(cfg) == "not running"


def test_check_runs_under_debians_python(pki, cfg, tmp_path):
    """The enroll service runs under /usr/bin/python3 (Debian's cryptography)."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3")
    key, chain, _ = _issued(pki, eku=("server",))
    (tmp_path / "k.pem").write_bytes(key)
    (tmp_path / "c.pem").write_bytes(chain)
    code = (
        "import sys; from pathlib import Path; from medtls.config import load_config\n"
        "from medtls.enroll.install import check_issued, IssuedCertificateRejected\n"
        "d = Path(sys.argv[1]); cfg = load_config(d / 'medtls.yaml')\n"
        "try: check_issued(cfg, (d / 'k.pem').read_bytes(), (d / 'c.pem').read_bytes())\n"
        "except IssuedCertificateRejected as e: print('REJECTED', e)\n"
    )
    import yaml

    raw = {"device": {"ip": DEVICE}, "mode": "explicit", "trust": {"ca": str(pki.ca)},
           "outbound": [{"name": "pacs", "address": "127.0.0.1", "listen": "127.0.0.1:11104",
                         "tls_port": 2762, "verify": {"cn": "pacs"}}],
           "enrollment": {"acme": {"directory": "https://ca.test/d"},
                          "state_dir": str(tmp_path)}}  # fmt: skip
    (tmp_path / "medtls.yaml").write_text(yaml.safe_dump(raw))
    out = subprocess.run(
        ["/usr/bin/python3", "-c", code, str(tmp_path)], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "REJECTED" in out.stdout and "lacks clientAuth" in out.stdout


@pytest.mark.parametrize(
    "days, not_before_days, warned",  # days: until not_after, from now
    [
        (6, -1, None),  # a fresh 7-day certificate: 6 days left (a fixed 30 days warned)
        (1.52, -5.5, "expires in 36 hours"),  # under a third of 7 days left
        (30, -370, None),  # 30 days left of 400: not yet within 14 days
        (10.5, -390, "expires in 10 days"),
    ],
)
def test_check_warns_at_the_same_fraction_of_the_lifetime_as_status(
    fresh_pki, tmp_path, days, not_before_days, warned
):
    from medtls.check import check_material

    cert, key = fresh_pki.issue("box", ips=(DEVICE,), days=days, not_before_days=not_before_days)
    raw = {"device": {"ip": DEVICE}, "mode": "explicit", "trust": {"ca": str(fresh_pki.ca)},
           "identity": {"certificate": str(cert), "key": str(key)},
           "inbound": [{"name": "ris", "listen": "127.0.0.1:12762", "port": 2762,
                        "allow": [{"cn": "ris"}]}]}  # fmt: skip
    problems, warnings = check_material(parse_config(raw, tmp_path / "m.yaml"))
    assert problems == []
    expiry = [w for w in warnings if "expires in" in w]
    assert expiry == ([f"identity.certificate: certificate {warned}"] if warned else [])


def test_check_passes_a_box_still_waiting_for_its_first_certificate(pki, tmp_path):
    """medtls-firstboot installs a card's enrollment settings only if `medtls check` passes: with
    no certificate yet it checks everything else and says the box is enrolling (fail closed)."""
    import yaml

    raw = {"device": {"ip": DEVICE}, "mode": "explicit", "trust": {"ca": str(pki.ca)},
           "inbound": [{"name": "ris", "listen": "127.0.0.1:12762", "port": 2762,
                        "allow": [{"cn": "ris"}]}],
           "enrollment": {"acme": {"directory": "https://ca.test/acme/directory"},
                          "state_dir": str(tmp_path / "enrollment")}}  # fmt: skip
    path = tmp_path / "medtls.yaml"
    path.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "medtls", "check", "--config", str(path)],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout
    assert "warning: enrolling: no identity certificate yet" in r.stderr
    # The rest is still checked: a trust anchor that is not a certificate fails.
    (tmp_path / "bad-ca.pem").write_text("not a certificate\n")
    raw["trust"]["ca"] = str(tmp_path / "bad-ca.pem")
    path.write_text(yaml.safe_dump(raw))
    r = subprocess.run([sys.executable, "-m", "medtls", "check", "--config", str(path)],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode != 0 and "trust.ca" in r.stdout + r.stderr, r.stdout + r.stderr
