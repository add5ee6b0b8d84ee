"""medtls-data-seed against a temporary tree (MEDTLS_SEED_ROOT: the root filesystem's copies,
MEDTLS_DATA: the data partition): it copies what /data lacks and never touches what it has."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "files" / "medtls-data-seed"
MACHINE_ID = "0123456789abcdef0123456789abcdef"


def seed(tmp: Path, paths: str, dirs: str = "") -> subprocess.CompletedProcess:
    env = {
        "PATH": os.environ["PATH"],
        "MEDTLS_SEED_ROOT": str(tmp / "root"),
        "MEDTLS_DATA": str(tmp / "data"),
        "MEDTLS_DATA_PATHS": paths,
        "MEDTLS_DATA_DIRS": dirs,
    }
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, check=True)


def image_root(tmp: Path) -> Path:
    root = tmp / "root"
    (root / "etc/medtls").mkdir(parents=True)
    (root / "etc/medtls/medtls.yaml").write_text("image default\n")
    (root / "etc/medtls/medtls.yaml").chmod(0o640)
    (root / "etc/machine-id").write_text(MACHINE_ID + "\n")
    (tmp / "data").mkdir()
    return root


def test_first_boot_copies_what_data_lacks_with_modes(tmp_path):
    image_root(tmp_path)
    out = seed(tmp_path, "/etc/medtls /var/lib/medtls /etc/machine-id", "/etc/ssh").stdout
    data = tmp_path / "data"
    assert (data / "etc/medtls/medtls.yaml").read_text() == "image default\n"
    assert (data / "etc/medtls/medtls.yaml").stat().st_mode & 0o777 == 0o640
    assert (data / "var/lib/medtls").is_dir()  # not in the image: created empty
    assert (data / "etc/machine-id").read_text() == MACHINE_ID + "\n"
    assert (data / "etc/ssh").is_dir()
    assert "seeded " + str(data / "etc/medtls") in out
    assert not list(data.rglob("*.seeding"))


def test_what_data_holds_is_never_overwritten(tmp_path):
    image_root(tmp_path)
    kept = tmp_path / "data/etc/medtls"
    kept.mkdir(parents=True)
    (kept / "site-marker.txt").write_text("the box's own\n")
    (tmp_path / "data/etc/machine-id").write_text("f" * 32 + "\n")
    out = seed(tmp_path, "/etc/medtls /etc/machine-id").stdout
    assert sorted(p.name for p in kept.iterdir()) == ["site-marker.txt"]
    assert (tmp_path / "data/etc/machine-id").read_text() == "f" * 32 + "\n"
    assert f"kept {kept}" in out


def test_an_uninitialised_machine_id_is_not_seeded(tmp_path):
    root = image_root(tmp_path)
    (root / "etc/machine-id").write_text("uninitialized\n")
    seed(tmp_path, "/etc/machine-id")
    assert not (tmp_path / "data/etc/machine-id").exists()
