"""Fixtures for the image boot test: the built image, a PKI, and booted VMs in a lab.

MEDTLS_IMAGE_DIR points at build-image.sh's output (disk.img, vmlinuz, initrd.img) built with
MEDTLS_TEST_GUEST=1; MEDTLS_IMAGE_ARCH is amd64 or arm64.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import vmlab
from pki import make_pki

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = {"amd64": 900, "arm64": 1500}
# A file the `rejected` VM's data partition holds before its first boot.
SITE_MARKER = "site-marker.txt"
# The `rejected` VM's data partition has this machine-id, its root slot none (a fresh slot).
MACHINE_ID = "6d656474c0ffee00000000000000002a"


@pytest.fixture(scope="session")
def image_dir() -> Path:
    d = Path(os.environ.get("MEDTLS_IMAGE_DIR", REPO / "build/image/test-amd64"))
    missing = [n for n in ("disk.img", "vmlinuz", "initrd.img") if not (d / n).exists()]
    if missing:
        pytest.fail(f"{d}: missing {', '.join(missing)}; build it with `make test-image`")
    return d


@pytest.fixture(scope="session")
def arch() -> str:
    return os.environ.get("MEDTLS_IMAGE_ARCH", "amd64")


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"), vmlab.MODALITY_IP, vmlab.PACS_IP)


def technician_files(pki: Path, config: Path) -> dict[str, Path]:
    return {
        "medtls.yaml": config,
        "device.crt": pki / "device.crt",
        "device.key": pki / "device.key",
        "ca.pem": pki / "ca.pem",
    }


def boot(tmp: Path, image_dir: Path, arch: str, files: dict[str, Path], data=None):
    """Boot a copy of the image with `files` in medtls/ on its FAT partition and, if given,
    `data` (path -> text) already on its data partition."""
    disk = vmlab.copy_disk(image_dir / "disk.img", tmp / "disk.img", vmlab.GROW_MIB)
    vmlab.fat_put(disk, files)
    if data:
        vmlab.data_put(disk, data)
    lab = vmlab.Lab(workdir=tmp, arch=arch)
    try:
        lab.start(disk, image_dir / "vmlinuz", image_dir / "initrd.img")
        report = lab.wait_report(BOOT_TIMEOUT[arch])
    except BaseException:
        lab.close()
        raise
    return lab, disk, report


@pytest.fixture(scope="module")
def appliance(tmp_path_factory, image_dir, arch, pki):
    """The image booted with the example configuration placed on its FAT partition."""
    tmp = tmp_path_factory.mktemp("vm")
    # The VM has no NTP server to reach, so its clock never counts as synchronised; a box in the
    # field keeps the default (validate certificates only after time sync).
    config = tmp / "medtls.yaml"
    config.write_text(
        (REPO / "examples/ct-modality.yaml").read_text() + "\nclock:\n  require_sync: false\n"
    )
    files = technician_files(pki, config)
    lab, disk, report = boot(tmp, image_dir, arch, files)
    try:
        yield lab, disk, report
    finally:
        lab.close()


@pytest.fixture(scope="module")
def rejected(tmp_path_factory, image_dir, arch, pki):
    """The image booted with an invalid configuration on its FAT partition, on a card whose
    data partition already holds /etc/medtls (a box that was configured before)."""
    tmp = tmp_path_factory.mktemp("vm-invalid")
    bad = tmp / "medtls.yaml"
    bad.write_text((REPO / "examples/ct-modality.yaml").read_text() + "\nno_such_key: 1\n")
    data = {
        f"/etc/medtls/{SITE_MARKER}": "kept across updates\n",
        "/etc/machine-id": MACHINE_ID + "\n",
    }
    lab, disk, report = boot(tmp, image_dir, arch, technician_files(pki, bad), data)
    try:
        yield lab, disk, report
    finally:
        lab.close()
