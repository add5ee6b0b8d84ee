"""playbooks/update.yml refuses bad inputs on the controller, with a message naming the variable,
before any task reaches a box. (The box side, install, reboot and the gate's verdict, needs RAUC
and real slots: the arm64 VM test in image/tests/ runs it.)"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _play(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """The update playbook from this checkout against a local host whose `medtls` does not exist:
    a task that reached the box would fail with "No such file", not with the input's message."""
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    medtls:\n      hosts:\n        box:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {sys.executable}\n"
        f"          medtls_update_bin: {tmp_path}/no-medtls\n"
        f"          medtls_update_incoming_dir: {tmp_path}/incoming\n"
    )
    env = dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_COLLECTIONS_PATH=str(ROOT / "ansible/collections"),
    )
    env.pop("ANSIBLE_CONFIG", None)
    return subprocess.run(
        [BIN / "ansible-playbook", "-i", "hosts.yml", str(ROOT / "playbooks/update.yml"), *extra],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def bundle(tmp_path) -> Path:
    path = tmp_path / "medtls-arm64-0.2.0+b42.raucb"
    path.write_bytes(b"not read before the box is reached")
    return path


def _refused(r: subprocess.CompletedProcess, message: str) -> None:
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert message in out, out
    assert "no-medtls" not in out, out  # no task ran on the box
    assert "Check the box is healthy" not in r.stdout, out


def test_no_bundle_at_all(tmp_path):
    _refused(_play(tmp_path), "give exactly one of medtls_update_bundle (a file on the controller)")


def test_both_a_file_and_a_url(tmp_path, bundle):
    r = _play(
        tmp_path,
        "-e",
        f"medtls_update_bundle={bundle}",
        "-e",
        f"medtls_update_bundle_url=https://updates.example/{bundle.name}",
    )
    _refused(r, "give exactly one of medtls_update_bundle")


def test_a_bundle_missing_on_the_controller(tmp_path):
    missing = tmp_path / "medtls-arm64-0.2.0.raucb"
    r = _play(tmp_path, "-e", f"medtls_update_bundle={missing}")
    _refused(r, f"medtls_update_bundle: no such file on the controller: {missing}")


def test_a_url_that_is_not_http(tmp_path):
    r = _play(tmp_path, "-e", "medtls_update_bundle_url=ftp://updates.example/medtls-arm64-1.raucb")
    _refused(r, "medtls_update_bundle_url must be an http:// or https:// address")


def test_a_checksum_without_a_url(tmp_path, bundle):
    checksum = "medtls_update_bundle_checksum=sha256:00"
    r = _play(tmp_path, "-e", f"medtls_update_bundle={bundle}", "-e", checksum)
    _refused(r, "medtls_update_bundle_checksum applies to medtls_update_bundle_url only")


def test_a_name_that_does_not_tell_the_version(tmp_path):
    renamed = tmp_path / "update.raucb"
    renamed.write_bytes(b"x")
    r = _play(tmp_path, "-e", f"medtls_update_bundle={renamed}")
    _refused(r, "cannot tell the expected version from the bundle name update.raucb")


def test_the_argument_spec_refuses_a_wrong_type(tmp_path, bundle):
    r = _play(
        tmp_path,
        "-e",
        f"medtls_update_bundle={bundle}",
        "-e",
        '{"medtls_update_reboot_timeout": "ten minutes"}',
    )
    _refused(r, "medtls_update_reboot_timeout")
    assert "Validating arguments against arg spec 'main'" in r.stdout


def test_good_inputs_pass_on_to_the_box(tmp_path, bundle):
    """The version comes from the name `make bundle` gives; the first task on the box then runs
    (and fails here, where the box has no medtls): the inputs were accepted."""
    r = _play(tmp_path, "-e", f"medtls_update_bundle={bundle}")
    assert r.returncode == 2, r.stdout
    assert "TASK [medtls.appliance.update : Check the box is healthy before touching" in r.stdout
    assert "no-medtls" in r.stdout
