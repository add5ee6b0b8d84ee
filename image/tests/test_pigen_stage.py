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
    for name in ("configure-rootfs.sh", "apply-playbook.sh", "sbom.py"):
        (fake / name).write_text(f'#!/bin/sh\necho "{name} $* keep=$MEDTLS_KEEP_FSTAB" >> {log}\n')
        (fake / name).chmod(0o755)
    rootfs = tmp_path / "rootfs"
    env = {
        "PATH": os.environ["PATH"],
        "MEDTLS_REPO": str(tmp_path / "repo"),
        "ROOTFS_DIR": str(rootfs),
        "MEDTLS_SBOM_OUT": str(tmp_path / "sbom.cdx.json"),
        "IMG_NAME": "medtls",
    }
    subprocess.run([str(STAGE / "00-medtls/00-run.sh")], env=env, check=True)
    assert log.read_text().splitlines() == [
        f"configure-rootfs.sh {rootfs} keep=1",
        f"apply-playbook.sh {rootfs} keep=",
        f"sbom.py --rootfs {rootfs} --name medtls-pi-gen --output {tmp_path}/sbom.cdx.json keep=",
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


# Issue 20 (pi-gen parity): stage2 installs network managers of its own. The stage applies the
# same playbook as the Debian image, whose interception role must keep all of them off the
# bridge and its ports, in image context without touching the build host.
REPO = HERE.parents[1]
INTERCEPTION = REPO / "roles/interception"
# What pi-gen's stage0-2 install that configures interfaces, and how each is kept off:
# package -> systemd units / generators it brings.
PIGEN_NETWORK_CONFIGURERS = {
    "network-manager": ["NetworkManager.service", "NetworkManager-wait-online.service"],
    "dhcpcd": ["dhcpcd.service"],
    "dhcpcd5": ["dhcpcd.service"],
    "dhcpcd-base": ["dhcpcd.service"],
    "ifupdown": ["networking.service"],
    "cloud-init": ["cloud-init-local.service", "cloud-init-network.service", "cloud-init.service"],
    "netplan.io": ["generator:netplan"],
    "rpi-connect": ["user:rpi-connect.service"],
    "rpi-connect-lite": ["user:rpi-connect.service"],
}


def _yaml(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def _interception_defaults() -> dict:
    return _yaml(INTERCEPTION / "defaults/main.yml")


def _mask_argv(context: str) -> list[str]:
    """The argv of the role's mask task, rendered as Ansible would for a build context."""
    import jinja2

    task = next(
        t
        for t in _yaml(INTERCEPTION / "tasks/exclusive.yml")
        if t["name"].startswith("Mask network")
    )
    expression = task["ansible.builtin.command"]["argv"].strip()
    assert expression.startswith("{{") and expression.endswith("}}"), expression
    variables = {**_interception_defaults(), "medtls_interception_build_context": context}
    return jinja2.Environment().compile_expression(expression[2:-2])(**variables)


def _kept_off() -> set[str]:
    d = _interception_defaults()
    return (
        set(_mask_argv("image")[2:])
        | {f"generator:{g}" for g in d["medtls_interception_masked_generators"]}
        | {f"user:{u}" for u in d["medtls_interception_foreign_network_user_units"]}
    )


def test_stage_applies_the_playbook_that_runs_the_interception_role():
    apply = (REPO / "image/scripts/apply-playbook.sh").read_text()
    assert "ansible/site.yml" in apply and "medtls_build_context=image" in apply
    # ansible/site.yml imports the collection's playbook medtls.appliance.site (playbooks/site.yml)
    imported = _yaml(REPO / "ansible/site.yml")[0]["ansible.builtin.import_playbook"]
    assert imported == "medtls.appliance.site", imported
    roles = [r["role"] for r in _yaml(REPO / "playbooks/site.yml")[0]["roles"]]
    assert "medtls.appliance.interception" in roles, roles
    main = _yaml(INTERCEPTION / "tasks/main.yml")
    assert any(t.get("ansible.builtin.import_tasks") == "exclusive.yml" for t in main), main


def test_every_pigen_network_configurer_is_masked_by_the_role():
    kept_off = _kept_off()
    missing = {
        package: sorted(set(units) - kept_off)
        for package, units in PIGEN_NETWORK_CONFIGURERS.items()
        if set(units) - kept_off
    }
    assert not missing, f"not masked by roles/interception: {missing}"
    assert "systemd-networkd.service" not in kept_off


def test_masking_in_an_image_build_leaves_the_build_host_alone():
    assert "--now" not in _mask_argv("image")
    assert _mask_argv("live")[:3] == ["systemctl", "mask", "--now"]


def test_networkmanager_would_leave_the_bridge_and_ports_unmanaged():
    import jinja2

    d = _interception_defaults()
    ports = [
        {"name": d["medtls_interception_device_port_name"]},
        {"name": d["medtls_interception_lan_port_name"]},
    ]
    text = jinja2.Template(
        (INTERCEPTION / "templates/networkmanager-unmanaged.conf.j2").read_text()
    ).render(ansible_managed="test", medtls_interception_ports=ports, **d)
    line = next(s for s in text.splitlines() if s.startswith("unmanaged-devices="))
    assert set(line.split("=", 1)[1].split(";")) == {
        "interface-name:br0",
        "interface-name:eth0",
        "interface-name:eth1",
    }
    assert "[keyfile]" in text


def _pigen_packages(pigen: Path) -> set[str]:
    names: set[str] = set()
    for stage in ("stage0", "stage1", "stage2"):
        for path in (pigen / stage).glob("*/[0-9][0-9]-packages*"):
            names |= set(path.read_text().split())
    return names


@pytest.mark.skipif(
    not (FETCHED_PIGEN / "stage2").is_dir(), reason="pi-gen not fetched (make image)"
)
def test_fetched_pigen_installs_no_unknown_network_configurer():
    """A bump of pi-gen that adds a network manager must extend PIGEN_NETWORK_CONFIGURERS."""
    suspicious = re.compile(
        r"network-manager|dhcp|ifupdown|netplan|cloud-init|connman|rpi-connect|wicd"
    )
    packages = _pigen_packages(FETCHED_PIGEN)
    unknown = sorted(
        p for p in packages if suspicious.search(p) and p not in PIGEN_NETWORK_CONFIGURERS
    )
    assert not unknown, f"pi-gen installs {unknown}: how are they kept off the bridge?"


def test_package_scan_reads_pigen_package_files(tmp_path):
    sub = tmp_path / "stage2/02-net-tweaks"
    sub.mkdir(parents=True)
    (sub / "00-packages").write_text("network-manager net-tools\ndhcpcd\n")
    (sub / "01-run.sh").write_text("apt-get install evil\n")
    assert _pigen_packages(tmp_path) == {"network-manager", "net-tools", "dhcpcd"}


def _unconditional_lines(script: str) -> list[str]:
    """The commands of configure-rootfs.sh outside its `MEDTLS_KEEP_FSTAB != 1` blocks (top-level
    `if ... fi` at column 0); comments left out."""
    out, inside = [], False
    for line in script.splitlines():
        if line.startswith('if [ "${MEDTLS_KEEP_FSTAB:-0}" != 1 ]; then'):
            inside = True
        elif inside and line == "fi":
            inside = False
        elif not inside and not line.lstrip().startswith("#"):
            out.append(line)
    return out


def test_pigen_image_keeps_the_single_root_layout_as_docs_say():
    """Issue 21: `make image` (pi-gen) keeps pi-gen's two partitions; docs/updates.md says why,
    and with MEDTLS_KEEP_FSTAB=1 (the pi-gen stage) configure-rootfs.sh installs nothing of the
    A/B layout (fstab, /data, the seed and growroot units, host keys on /data)."""
    docs = (HERE.parents[1] / "docs/updates.md").read_text()
    section = docs.split("### `make image` (pi-gen) keeps the single-root layout", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert "export-image/prerun.sh" in section and "MEDTLS_KEEP_FSTAB=1" in section
    script = (HERE.parent / "scripts/configure-rootfs.sh").read_text()
    outside = "\n".join(_unconditional_lines(script))
    for layout_only in ("/etc/fstab", "/data", "medtls-data-seed", "medtls-growroot", "6d656474"):
        assert layout_only in script, layout_only
        assert layout_only not in outside, f"{layout_only} also without MEDTLS_KEEP_FSTAB != 1"
    # The stage runs configure-rootfs.sh with MEDTLS_KEEP_FSTAB=1 and never make-disk.sh or
    # build-rootfs.sh (the initramfs hook): test_stage_runs_the_shared_scripts_on_rootfs_dir.
    stage = (STAGE / "00-medtls/00-run.sh").read_text()
    assert "MEDTLS_KEEP_FSTAB=1" in stage
    assert "make-disk.sh" not in stage and "build-rootfs.sh" not in stage
