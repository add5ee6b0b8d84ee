"""After the rollout to B (serial 1) in which the second box failed its gate: box 1 runs B with
the new configuration, box 2 was switched and rolled back to A with its previous configuration,
box 3 was never touched. Every box is healthy and reaches its peers."""

import json
import os
import re
from pathlib import Path

CONFIG = "/etc/medtls/medtls.yaml"


def _version_a():
    src = os.environ.get("MEDTLS_MOLECULE_SOURCE") or str(
        Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "proxy" / "medtls"
    )
    text = (Path(src) / "__init__.py").read_text()
    return re.search(r'(?m)^__version__ = "([^"]+)"$', text).group(1)


A = _version_a()
B = f"{A}+rollout1"


def _box(host):
    return int(re.search(r"rollout-(\d)", host.backend.get_hostname()).group(1))


def _status(host):
    result = host.run(f"/usr/bin/medtls status --json --config {CONFIG}")
    assert result.rc in (0, 1), result.stdout + result.stderr  # OK or WARNING (no NTP here)
    return json.loads(result.stdout)


def _expected(host):
    return B if _box(host) == 1 else A


def test_package_and_running_daemon(host):
    want = _expected(host)
    assert host.package("medtls").version == want
    assert host.check_output("/usr/bin/medtls --version") == f"medtls {want}"
    host.run_expect([0], "debsums -s medtls")
    status = _status(host)
    assert status["version"] == want
    assert status["ready"] and not status["draining"]


def test_configuration(host):
    conf = host.file(CONFIG)
    assert conf.mode == 0o640 and conf.group == "medtls"
    text = conf.content_string
    if _box(host) == 1:
        assert "name: archive" in text
        assert "handshake_timeout: 8" in text
    else:
        assert "archive" not in text
        assert "handshake_timeout: 10" in text
    host.run_expect([0], f"/usr/bin/medtls check --config {CONFIG}")


def test_peers_answer_a_real_handshake(host):
    peers = ["pacs", "archive"] if _box(host) == 1 else ["pacs"]
    for peer in peers:
        result = host.run(f"/usr/bin/medtls probe {peer} --config {CONFIG} --json --timeout 5")
        assert result.rc == 0, result.stdout
        assert json.loads(result.stdout)["outcome"] == "ok"


def test_history_of_each_box(host):
    dpkg_log = host.file("/var/log/dpkg.log").content_string
    upgraded = f"upgrade medtls:all {A} {B}" in dpkg_log
    downgraded = f"upgrade medtls:all {B} {A}" in dpkg_log
    kept = host.file(CONFIG + ".rollback")
    candidate = host.file(CONFIG + ".new")
    box = _box(host)
    if box == 1:
        assert upgraded and not downgraded
        # the previous configuration is kept beside the live one
        assert "archive" not in kept.content_string
        assert candidate.content_string == host.file(CONFIG).content_string
    elif box == 2:
        # switched to B, failed the gate, back on A with the configuration it had
        assert upgraded and downgraded
        assert kept.content_string == host.file(CONFIG).content_string
        assert "2765" in candidate.content_string  # the rejected candidate, left to inspect
        assert host.file(f"/var/cache/medtls/medtls_{A}_all.deb").exists
    else:
        # never reached by the rollout; the check-mode run wrote nothing
        assert not upgraded and not downgraded
        assert not kept.exists and not candidate.exists
        assert not host.file(f"/var/cache/medtls/medtls_{B}_all.deb").exists
