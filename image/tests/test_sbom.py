"""The image SBOM generator (image/scripts/sbom.py) against a small fake root filesystem: no
image build needed. The built image's SBOM is checked in test_boot.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sbom_check

SBOM = Path(__file__).resolve().parents[1] / "scripts/sbom.py"

STATUS = """\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: arm64
Multi-Arch: same
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Source: glibc
Version: 2.41-12
Description: GNU C Library: Shared libraries
 Contains the standard libraries that are used by nearly all programs on
 the system.

Package: libc6
Status: install ok installed
Architecture: armhf
Multi-Arch: same
Source: glibc
Version: 2.41-12

Package: python3-yaml
Status: install ok installed
Architecture: arm64
Source: pyyaml (6.0.2-1)
Version: 6.0.2-1+b2

Package: dpkg
Status: install ok installed
Architecture: arm64
Version: 1:1.22.21+rpt1

Package: network-manager
Status: deinstall ok config-files
Architecture: arm64
Version: 1.52.0-1

Package: half
Status: install reinstreq half-installed
Architecture: arm64
Version: 1.0
"""


def fake_rootfs(tmp_path: Path, status: str = STATUS, medtls: str | None = "0.1.0") -> Path:
    root = tmp_path / "rootfs"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(status)
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text(
        'ID=debian\nVERSION_CODENAME=trixie\nPRETTY_NAME="Debian 13"\n'
    )
    if medtls is not None:
        tree = root / "opt/medtls/lib/medtls"
        tree.mkdir(parents=True)
        (tree / "__init__.py").write_text(f'"""medtls"""\n\n__version__ = "{medtls}"\n')
    return root


def run(root: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1790000000"}
    cmd = [
        sys.executable,
        str(SBOM),
        "--rootfs",
        str(root),
        "--name",
        "medtls-test",
        "--output",
        str(out),
    ]
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, env=env)


def test_sbom_lists_installed_packages_and_medtls_and_validates(tmp_path):
    out = tmp_path / "sbom.cdx.json"
    result = run(fake_rootfs(tmp_path), out)
    assert result.returncode == 0, result.stderr
    assert sbom_check.problems(out) == []
    sbom = json.loads(out.read_text())
    names = sorted((c["name"], c["version"]) for c in sbom["components"])
    assert names == [
        ("dpkg", "1:1.22.21+rpt1"),
        ("libc6", "2.41-12"),
        ("libc6", "2.41-12"),
        ("medtls", "0.1.0"),
        ("python3-yaml", "6.0.2-1+b2"),
    ]
    purls = {
        c["name"] + ":" + c["purl"].split("arch=")[-1][:5]: c["purl"] for c in sbom["components"]
    }
    assert (
        purls["dpkg:arm64"]
        == "pkg:deb/debian/dpkg@1%3A1.22.21%2Brpt1?arch=arm64&distro=debian-trixie"
    )
    assert sbom["metadata"]["component"]["version"] == "0.1.0"
    assert sbom["metadata"]["timestamp"] == "2026-09-21T14:13:20Z"
    yaml = next(c for c in sbom["components"] if c["name"] == "python3-yaml")
    assert {"name": "deb:source", "value": "pyyaml"} in yaml["properties"]


def test_medtls_installed_as_a_debian_package_is_listed_once(tmp_path):
    status = (
        STATUS
        + "\nPackage: medtls\nStatus: install ok installed\nArchitecture: all\nVersion: 0.2.0-1\n"
    )
    out = tmp_path / "sbom.cdx.json"
    result = run(fake_rootfs(tmp_path, status, medtls=None), out)
    assert result.returncode == 0, result.stderr
    assert sbom_check.problems(out) == []
    medtls = [c for c in json.loads(out.read_text())["components"] if c["name"] == "medtls"]
    assert [(c["version"], c["purl"].split("?")[0]) for c in medtls] == [
        ("0.2.0-1", "pkg:deb/debian/medtls@0.2.0-1")
    ]


def test_an_image_without_medtls_gets_no_sbom(tmp_path):
    out = tmp_path / "sbom.cdx.json"
    result = run(fake_rootfs(tmp_path, medtls=None), out)
    assert result.returncode == 2
    assert "medtls is not installed" in result.stderr
    assert not out.exists()


def test_a_root_without_dpkg_database_is_named(tmp_path):
    result = run(tmp_path, tmp_path / "sbom.cdx.json")
    assert result.returncode == 2
    assert "var/lib/dpkg/status: cannot read the dpkg database" in result.stderr


def test_the_validator_rejects_a_broken_sbom(tmp_path):
    out = tmp_path / "sbom.cdx.json"
    assert run(fake_rootfs(tmp_path), out).returncode == 0
    sbom = json.loads(out.read_text())
    sbom["components"][0]["type"] = "deb"
    out.write_text(json.dumps(sbom))
    assert any("schema" in p for p in sbom_check.problems(out))
    sbom["components"][0]["type"] = "library"
    sbom["components"] = [c for c in sbom["components"] if c["name"] != "medtls"]
    sbom["dependencies"] = []
    out.write_text(json.dumps(sbom))
    assert any("medtls must be one component" in p for p in sbom_check.problems(out))


@pytest.mark.parametrize("field", ["Package", "Version"])
def test_paragraphs_without_name_or_version_are_skipped(tmp_path, field):
    paragraph = "Package: x\nStatus: install ok installed\nVersion: 1\n"
    status = "\n".join(line for line in paragraph.splitlines() if not line.startswith(field))
    out = tmp_path / "sbom.cdx.json"
    result = run(fake_rootfs(tmp_path, STATUS + "\n" + status + "\n"), out)
    assert result.returncode == 0, result.stderr
    assert "x" not in {c["name"] for c in json.loads(out.read_text())["components"]}
