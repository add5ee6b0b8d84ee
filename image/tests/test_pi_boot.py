"""The Raspberry Pi half of the boot chain, structurally (docs/updates.md "Boot selection").

No Pi firmware runs here: the FAT partition's config.txt is checked for what the firmware reads,
and the image's Debian U-Boot for the Pi (rpi_arm64, from the FAT partition) runs on QEMU's
raspi3b machine with the built disk as its SD card: it must find boot.scr on mmc 0:1, count an
attempt in bootslot.env and start slot A's kernel with the slot's command line (the kernel's
first lines end the test).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from vmlab import FAT_OFFSET, boot_env_read, copy_disk, fat_read

KERNEL_STARTED_TIMEOUT = 300


@pytest.fixture
def arm64_image(image_dir: Path, arch: str) -> Path:
    if arch != "arm64":
        pytest.skip("the Raspberry Pi boot chain is in the arm64 image only")
    return image_dir


def test_config_txt_makes_the_pi_firmware_start_u_boot(arm64_image):
    disk = arm64_image / "disk.img"
    config = fat_read(disk, "::/config.txt")
    lines = {line.strip() for line in config.splitlines()}
    assert {"arm_64bit=1", "kernel=u-boot.bin"} <= lines, config
    assert not [line for line in lines if line.startswith("initramfs")], config
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{disk}@@{FAT_OFFSET}", "::/"], capture_output=True, text=True
    ).stdout
    for name in ("u-boot.bin", "boot.scr", "bootslot.env", "bcm2837-rpi-3-b.dtb"):
        assert f"::/{name}" in listing, listing
    assert boot_env_read(disk) == {"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}


def test_pi_u_boot_runs_boot_scr_from_the_sd_card_and_starts_slot_a(arm64_image, tmp_path):
    disk = copy_disk(arm64_image / "disk.img", tmp_path / "sd.img")
    # What the Pi firmware would load from the FAT partition: U-Boot and the Pi 3's device tree.
    uboot, dtb = tmp_path / "u-boot.bin", tmp_path / "bcm2837-rpi-3-b.dtb"
    for path in (uboot, dtb):
        subprocess.run(
            ["mcopy", "-i", f"{disk}@@{FAT_OFFSET}", f"::/{path.name}", str(path)], check=True
        )
    size = disk.stat().st_size
    # QEMU's SD card model takes power-of-two sizes only.
    os.truncate(disk, 1 << (size - 1).bit_length())
    console = tmp_path / "uart1.log"
    # U-Boot and Linux use the mini UART (serial1) on a Pi 3, as with enable_uart=1.
    cmd = [
        "qemu-system-aarch64", "-M", "raspi3b", "-m", "1G",
        "-kernel", str(uboot), "-dtb", str(dtb),
        "-drive", f"file={disk},if=sd,format=raw",
        "-serial", "null", "-serial", f"file:{console}",
        "-display", "none", "-monitor", "none",
    ]  # fmt: skip
    qemu = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + KERNEL_STARTED_TIMEOUT
        text = ""
        while time.monotonic() < deadline and qemu.poll() is None:
            text = console.read_text(errors="replace") if console.exists() else ""
            if "Kernel command line:" in text:
                break
            time.sleep(2)
    finally:
        qemu.kill()
        qemu.wait()
    boot = "\n".join(line for line in text.splitlines() if "medtls-boot:" in line) or text[-3000:]
    assert "medtls-boot: trying slot A, 2 attempts left after this one" in boot, boot
    assert "Machine model: Raspberry Pi 3 Model B" in text, text[-3000:]
    cmdline = next((line for line in text.splitlines() if "Kernel command line:" in line), "")
    assert "root=PARTUUID=6d656474-02" in cmdline and "rauc.slot=A" in cmdline, cmdline
    assert "console=ttyS1,115200" in cmdline, cmdline
    # U-Boot wrote the decremented counter back to the FAT file Linux reads (fw_env.config).
    assert boot_env_read(disk)["BOOT_A_LEFT"] == "2"
