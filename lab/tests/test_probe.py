"""`medtls probe` on installation day: run in the box namespace, transparent mode, against the
lab PACS (DCMTK `storescp +tls -rc` on 198.18.0.20:2762, AE PACS). The probe leaves as the
device (198.18.0.10, a source port the ruleset steers back up to the box), shakes hands with
the box's identity and proves the PACS accepted it with an association and a C-ECHO.

The four installation-day answers: good (0), wrong pin (5, naming the rule), PACS down (3) and
PACS distrusts the box (6)."""

from __future__ import annotations

import json

import yaml
from medlab import services as sv
from medtls_testpki import CA, HOUR

WRONG_PIN = "00" * 32


def _config(env, name: str, **change) -> str:
    cfg = yaml.safe_load(env.config.read_text())
    pacs = next(p for p in cfg["outbound"] if p["name"] == "pacs")
    pacs.update(change.pop("pacs", {}))
    cfg.update(change)
    cfg["limits"] = {**cfg.get("limits", {}), "connect_timeout": 3, "handshake_timeout": 5}
    path = env.lab.workdir / f"probe-{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def _probe(env, config: str, *extra: str) -> tuple[int, dict, str]:
    argv = ["probe", "pacs", "--config", config, "--dicom", "--called-ae", sv.PACS_AET, *extra]
    text = env.lab.run("box", sv.medtls_argv(*argv), timeout=60, check=False)
    js = env.lab.run("box", sv.medtls_argv(*argv, "--json"), timeout=60, check=False)
    assert js.returncode == text.returncode, (text.stdout, js.stdout, js.stderr)
    return text.returncode, json.loads(js.stdout), text.stdout


def test_probe_good_pacs_association_and_c_echo_as_the_device(env):
    code, js, out = _probe(env, str(env.config), "--calling-ae", sv.DEVICE_AET)
    assert code == 0, out
    assert js["source"].startswith(sv.DEVICE_IP) and js["mode"] == "transparent"
    assert js["tcp"]["local"].startswith(f"{sv.DEVICE_IP}:")
    assert 40000 <= int(js["tcp"]["local"].rsplit(":", 1)[1]) <= 60999
    assert js["chain"][0]["subject"].endswith("CN=pacs") and js["chain"][0]["ip"] == [sv.PACS_IP]
    assert js["verify"]["rules"] == [
        {"rule": "ip", "expected": sv.PACS_IP, "ok": True, "detail": ""}
    ]
    assert js["peer_accepted_us"] is True
    assert js["dicom"]["answer"] == "A-ASSOCIATE-AC"
    assert js["dicom"]["c_echo_status"] == "0x0000 Success"
    assert "result: OK (exit 0)" in out and f"{sv.DEVICE_AET} -> {sv.PACS_AET}" in out


def test_probe_wrong_pin_names_the_rule(env):
    config = _config(env, "pin", pacs={"verify": {"ip": sv.PACS_IP, "spki_sha256": WRONG_PIN}})
    code, js, out = _probe(env, config)
    assert code == 5, out
    assert js["outcome"] == "peer_certificate_refused"
    assert [(r["rule"], r["ok"]) for r in js["verify"]["rules"]] == [
        ("ip", True), ("spki_sha256", False)
    ]  # fmt: skip
    assert "verify.spki_sha256" in js["detail"] and "MISMATCH" in out
    assert js["dicom"] == {}  # refused before any DICOM byte left


def test_probe_pacs_down(env):
    config = _config(env, "down", pacs={"tls_port": 2763})  # nothing listens there
    code, js, out = _probe(env, config)
    assert code == 3, out
    assert js["outcome"] == "unreachable" and js["tcp"]["ok"] is False
    assert "refused" in js["tcp"]["error"].lower()


def test_probe_pacs_distrusts_the_box(env):
    """A box identity from a CA the PACS does not know (identity.ca names it, so our own
    validation passes): under TLS 1.3 the PACS's refusal arrives after our handshake."""
    pki = env.lab.workdir / "probe-pki"
    pki.mkdir(exist_ok=True)
    other = CA(pki, "other hospital CA", org="elsewhere", cert_file="other-ca.crt",
               key_file="other-ca.key", days=7, not_before_days=-HOUR)  # fmt: skip
    cert, key = other.issue("device", "ct-modality", ips=(sv.DEVICE_IP,), days=7,
                            not_before_days=-HOUR)  # fmt: skip
    identity = {"certificate": str(cert), "key": str(key), "ca": str(pki / "other-ca.crt")}
    config = _config(env, "distrust", identity=identity)
    code, js, out = _probe(env, config)
    assert code == 6, out
    assert js["outcome"] == "peer_refused_our_certificate"
    assert js["peer_accepted_us"] is False
    assert js["tls"]["ok"] is True  # the handshake completed; the refusal came at the read
    assert js["verify"]["rules"][0]["ok"] is True  # we did trust the PACS
    assert "accepted  NO" in out
