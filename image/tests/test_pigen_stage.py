"""The pi-gen stage and config follow pi-gen's rules (see pigen_rules.py) and do what they claim."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pigen_rules
import pytest

HERE = Path(__file__).resolve().parent
PIGEN = HERE.parent / "pi-gen"
STAGE = PIGEN / "stage-medtls"
IMAGE_MK = HERE.parents[1] / "mk/image.mk"
FETCHED_PIGEN = HERE.parents[1] / "build/image/pi-gen/pi-gen"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7dXJmVqPH0wR8s8C0VSi3o0HkrH0sV1GZbZQm7r8jq test"


def test_stage_layout_follows_pigen_rules():
    assert pigen_rules.stage_problems(STAGE) == []


def test_rule_checker_catches_what_pigen_would_ignore(tmp_path):
    sub = tmp_path / "stage-x" / "00-sub"
    sub.mkdir(parents=True)
    (sub / "00-run.sh").write_text("#!/bin/bash\n")
    (sub / "run.sh").write_text("#!/bin/bash\n")
    problems = pigen_rules.stage_problems(tmp_path / "stage-x")
    assert any("00-run.sh: not executable" in p for p in problems)
    assert any("run.sh: pi-gen ignores" in p for p in problems)


def test_stage_exports_an_image_and_starts_from_stage2():
    suffix = subprocess.run(
        ["bash", "-c", 'source "$1"; printf %s "$IMG_SUFFIX"', "_", str(STAGE / "EXPORT_IMAGE")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert suffix == "-medtls"
    prerun = (STAGE / "prerun.sh").read_text()
    assert 'if [ ! -d "${ROOTFS_DIR}" ]' in prerun and "copy_previous" in prerun


def _config(**env: str) -> dict[str, str]:
    names = [
        "IMG_NAME",
        "RELEASE",
        "FIRST_USER_NAME",
        "FIRST_USER_PASS",
        "DISABLE_FIRST_BOOT_USER_RENAME",
        "ENABLE_SSH",
        "PUBKEY_SSH_FIRST_USER",
        "PUBKEY_ONLY_SSH",
        "STAGE_LIST",
        "ENABLE_CLOUD_INIT",
    ]
    script = (
        'source "$1"; for n in ' + " ".join(names) + '; do printf "%s=%s\\n" "$n" "${!n}"; done'
    )
    out = subprocess.run(
        ["bash", "-c", script, "_", str(PIGEN / "config")],
        env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.split("=", 1) for line in out.splitlines())


def test_config_satisfies_pigen_checks_and_has_no_usable_password():
    c = _config(MEDTLS_THROWAWAY_PASS="x" * 20, PUBKEY_SSH_FIRST_USER=KEY)
    assert c["RELEASE"] == "trixie"
    assert pigen_rules.USER_NAME.match(c["FIRST_USER_NAME"])
    # build.sh refuses DISABLE_FIRST_BOOT_USER_RENAME=1 without FIRST_USER_PASS, and
    # PUBKEY_ONLY_SSH=1 without PUBKEY_SSH_FIRST_USER.
    assert c["DISABLE_FIRST_BOOT_USER_RENAME"] == "1" and c["FIRST_USER_PASS"]
    assert c["PUBKEY_ONLY_SSH"] == "1" and c["PUBKEY_SSH_FIRST_USER"] == KEY
    assert c["ENABLE_SSH"] == "1"
    assert c["STAGE_LIST"].split() == ["stage0", "stage1", "stage2", "stage-medtls"]


def test_config_refuses_to_build_without_a_key():
    with pytest.raises(subprocess.CalledProcessError):
        _config(MEDTLS_THROWAWAY_PASS="x" * 20)


def test_stage_runs_the_shared_scripts_on_rootfs_dir(tmp_path):
    fake = tmp_path / "repo/image/scripts"
    fake.mkdir(parents=True)
    log = tmp_path / "calls"
    for name in ("configure-rootfs.sh", "apply-playbook.sh"):
        (fake / name).write_text(f'#!/bin/sh\necho "{name} $* keep=$MEDTLS_KEEP_FSTAB" >> {log}\n')
        (fake / name).chmod(0o755)
    rootfs = tmp_path / "rootfs"
    env = {
        "PATH": os.environ["PATH"],
        "MEDTLS_REPO": str(tmp_path / "repo"),
        "ROOTFS_DIR": str(rootfs),
    }
    subprocess.run([str(STAGE / "00-medtls/00-run.sh")], env=env, check=True)
    assert log.read_text().splitlines() == [
        f"configure-rootfs.sh {rootfs} keep=1",
        f"apply-playbook.sh {rootfs} keep=",
    ]


@pytest.mark.skipif(
    not (FETCHED_PIGEN / "build.sh").exists(), reason="pi-gen not fetched (make image)"
)
def test_rules_match_the_fetched_pigen_source():
    found = pigen_rules.rules_in_pigen_source((FETCHED_PIGEN / "build.sh").read_text())
    assert found == set(pigen_rules.SUB_STAGE_SUFFIXES)


def _pinned_commit() -> str:
    m = re.search(r"^PIGEN_COMMIT \?= *(\S*)$", IMAGE_MK.read_text(), re.M)
    assert m, "mk/image.mk sets no PIGEN_COMMIT default"
    return m.group(1)


def test_pigen_is_pinned_to_a_full_commit():
    assert re.fullmatch(r"[0-9a-f]{40}", _pinned_commit()), _pinned_commit()
