"""`medtls update install|gate|status` end to end against Debian's real `rauc` (service on a
private D-Bus, slots on image files, the box's U-Boot slot logic as rauc's custom bootloader
backend: tests/rauc_util.py). Bundles use the plain format here: verity bundles need
device-mapper, which this host's container lacks (the arm64 VM test installs verity bundles)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rauc_util
from conftest import box_config, free_port, write_yaml

pytestmark = pytest.mark.skipif(not rauc_util.have_rauc(), reason="needs rauc and dbus-daemon")
PROXY = Path(__file__).resolve().parents[1]


@pytest.fixture
def box(tmp_path, pki):
    ca, cert, key = rauc_util.make_ca(tmp_path / "pki", "vendor")
    env = rauc_util.RaucEnv(tmp_path / "rauc", keyring=ca)
    env.root.mkdir()
    env.formats = "plain verity"
    env.setup()
    env.bundle = rauc_util.make_bundle(tmp_path, cert, key, "2.0+test", "medtls-test", "plain")
    env.keyring = ca
    port, echo = free_port(), free_port()
    route = {"name": "svc", "listen": f"127.0.0.1:{port}", "device_port": echo,
             "allow": [{"cn": "x"}]}  # fmt: skip
    cfg = box_config(pki, "box-b", inbound=[route])
    env.config = write_yaml(tmp_path / "medtls.yaml", cfg)
    env.port = port
    env.state = tmp_path / "state" / "state.json"
    env.boot_id = tmp_path / "boot_id"
    env.reboots = tmp_path / "reboots"
    yield env
    env.stop()


def boot(env) -> str:
    slot = env.boot()
    env.boot_id.write_text(os.urandom(16).hex() + "\n")
    return slot


def medtls(env, *args, timeout=120):
    e = {**env.environ, "PYTHONPATH": str(PROXY)}
    return subprocess.run(
        [sys.executable, "-m", "medtls", "update", *args, "--config", str(env.config),
         "--state", str(env.state), "--rauc-conf", str(env.conf)],
        capture_output=True, text=True, env=e, timeout=timeout,
    )  # fmt: skip


def gate(env, timeout="1"):
    return medtls(env, "gate", "--timeout", timeout, "--interval", "0.2",
                  "--boot-id-file", str(env.boot_id),
                  "--reboot-command", f"touch {env.reboots}")  # fmt: skip


def install(env, bundle):
    return medtls(env, "install", str(bundle), "--keyring", str(env.keyring),
                  "--boot-id-file", str(env.boot_id))  # fmt: skip


def test_bundle_of_a_foreign_key_is_refused_before_any_slot_is_touched(box, tmp_path):
    boot(box)
    _, fcert, fkey = rauc_util.make_ca(tmp_path / "pki", "foreign")
    foreign = rauc_util.make_bundle(tmp_path, fcert, fkey, "6.6", "medtls-test", "plain")
    before = (box.uboot_env(), (box.root / "b.img").read_bytes())
    r = install(box, foreign)
    assert r.returncode == 1
    assert "REFUSED" in r.stdout and "does not verify against the keyring" in r.stdout
    assert (box.uboot_env(), (box.root / "b.img").read_bytes()) == before
    assert not box.state.exists()


def test_healthy_new_slot_is_committed_and_reported(box, run_medtls, pki):
    boot(box)
    r = install(box, box.bundle)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installed into slot B" in r.stdout
    # the same boot: nothing to decide yet
    assert "reboot to start it" in gate(box).stdout
    assert boot(box) == "B"
    daemon = run_medtls(yaml_of(box), "box", ready=[box.port])
    r = gate(box, timeout="60")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "slot B committed, version 2.0+test" in r.stdout
    assert box.uboot_env()["BOOT_B_LEFT"] == "3" and box.uboot_env()["BOOT_ORDER"].startswith("B")
    state = json.loads(box.state.read_text())
    assert state["outcome"] == "committed" and state["slot"] == "B"
    s = medtls(box, "status")
    assert s.returncode == 0 and s.stdout.startswith("update: slot B committed, version 2.0+test")
    assert daemon.proc.poll() is None


def yaml_of(box) -> dict:
    import yaml

    return yaml.safe_load(box.config.read_text())


def test_unhealthy_new_slot_falls_back_and_the_old_slot_reports_it(box):
    boot(box)
    assert install(box, box.bundle).returncode == 0
    assert boot(box) == "B"
    r = gate(box)  # no medtls answers on its control socket in slot B
    assert r.returncode == 1
    assert "FELL BACK" in r.stdout and "medtls does not answer" in r.stdout
    assert box.reboots.exists()
    assert box.uboot_env()["BOOT_ORDER"] == "A"
    assert boot(box) == "A"
    r = gate(box)
    assert r.returncode == 0 and "no update pending" in r.stdout
    s = medtls(box, "status")
    assert s.returncode == 1
    assert s.stdout.startswith("update: FELL BACK to A at ")
    assert "medtls does not answer" in s.stdout
    assert json.loads(box.state.read_text())["fallbacks"] == 1


def test_new_slot_that_never_reaches_the_gate_is_reported_after_the_fallback(box):
    boot(box)
    assert install(box, box.bundle).returncode == 0
    for _ in range(3):  # the new slot hangs three times before the gate runs
        assert boot(box) == "B"
    assert boot(box) == "A"  # U-Boot: B has no attempts left
    r = gate(box)
    assert r.returncode == 1
    assert "slot B was marked bad" in r.stdout or "slot B did not boot" in r.stdout
    state = json.loads(box.state.read_text())
    assert state["outcome"] == "fell_back" and state["fallbacks"] == 1
    assert box.uboot_env()["BOOT_ORDER"] == "A"  # never tried again


def test_the_serving_daemon_reports_a_fallback_in_status_and_metrics(tmp_path, pki):
    from conftest import Medtls
    from medtls.core import update as u

    state = tmp_path / "update-state.json"
    pending = u.installed(None, "B", "A", "2.0+test", 1000.0, "1234")
    u.write_state(state, u.fell_back(pending, 86400.0, "medtls does not answer"))
    port, metrics = free_port(), free_port()
    cfg = box_config(pki, "box-b", metrics={"enabled": True, "listen": f"127.0.0.1:{metrics}"},
                     inbound=[{"name": "svc", "listen": f"127.0.0.1:{port}",
                               "device_port": free_port(), "allow": [{"cn": "x"}]}])  # fmt: skip
    path = write_yaml(tmp_path / "medtls.yaml", cfg)
    m = Medtls(path, tmp_path / "medtls.log", env={"MEDTLS_UPDATE_STATE": str(state)})
    try:
        m.wait_ready([port])
        e = {**os.environ, "PYTHONPATH": str(PROXY)}
        r = subprocess.run([sys.executable, "-m", "medtls", "status", "--config", str(path)],
                           capture_output=True, text=True, env=e, timeout=60)  # fmt: skip
        line = "update: FELL BACK to A at 1970-01-02T00:00:00Z: medtls does not answer"
        assert r.returncode >= 1 and line in r.stdout  # WARNING at least
        assert f"WARNING: {line}" in r.stdout.split("problems:")[1], r.stdout
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=10).read()
        text = text.decode()
        assert "medtls_update_fallbacks_total 1" in text
        assert 'medtls_update_info{slot="B",version="2.0+test",outcome="fell_back"} 1' in text
    finally:
        m.stop()
