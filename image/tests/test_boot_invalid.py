"""Boot the image with an invalid configuration on its FAT partition: it must stay fail closed."""

from __future__ import annotations

import re

import peers
from conftest import MACHINE_ID, SITE_MARKER
from vmlab import PACS_IP, fat_list, fat_read, partitions, report_values, run


def test_invalid_first_boot_config_fails_closed_with_a_clear_message(rejected, tmp_path, pki):
    lab, disk, report = rejected
    values = report_values(report["begin"])
    assert values["medtls"] != "active"
    assert values["firstboot"] == "failed"
    console = lab.console_log.read_text(errors="replace")
    assert "medtls-firstboot: invalid medtls/medtls.yaml on the boot partition" in console
    assert "invalid medtls/medtls.yaml" in report["firstboot-journal"]
    assert "no_such_key" in fat_read(disk, "::/medtls/ERROR.txt")
    assert "medtls.yaml" in fat_list(disk, "::/medtls/")
    # The serial console's status screen (medtls console) says so without a login.
    screens = [s for s in console.split("\x1b[H\x1b[2J") if "Press Enter to log in." in s]
    assert screens, console[-3000:]
    assert "state:     FAIL CLOSED: medtls not running" in screens[-1], screens[-1]
    assert "traffic:   BLOCKED (fail closed)" in screens[-1], screens[-1]
    # Fail closed: the modality's plaintext does not leave the box.
    listener = peers.start_listener(lab.lan_ns, 104)
    try:
        result = peers.probe(lab.mod_ns, PACS_IP, 104)
    finally:
        seen = peers.stop(listener)
    assert "accepted" not in seen, f"plaintext from the modality reached the LAN: {seen}"
    assert result.startswith("refused"), result


def test_first_boot_never_overwrites_what_the_data_partition_holds(rejected, image_dir):
    """Issue 21: /data already has /etc/medtls (a configured box, or the first boot of a newly
    installed slot): the seed keeps it and copies none of the image's /etc/medtls over it."""
    _, _, report = rejected
    listing = report["etc-medtls"]
    assert re.search(rf"^-rw-r----- .* {SITE_MARKER}$", listing, re.M), listing
    assert "kept /data/etc/medtls" in report["data-seed-journal"], report["data-seed-journal"]
    assert "seeded /data/etc/medtls" not in report["data-seed-journal"]
    # The image's own /etc/medtls (root slot A, read without booting) was not copied in.
    p2 = partitions(image_dir / "disk.img")[1]
    fs = f"{image_dir / 'disk.img'}?offset={p2['start'] * 512}"
    rows = run(["debugfs", "-R", "ls -p /etc/medtls", fs]).stdout.splitlines()
    names = {row.split("/")[5] for row in rows if row.count("/") >= 6} - {".", ".."}
    present = set(re.findall(r"\S+$", listing, re.M))
    assert not names & present, (names, listing)


def test_a_root_slot_without_machine_id_boots_with_the_one_on_the_data_partition(rejected):
    """Issue 21: the image's root has an empty /etc/machine-id, as a newly installed slot has; the
    initramfs puts /data's id into it before systemd reads it, so the box keeps its identity."""
    _, _, report = rejected
    values = report_values(report["layout"])
    assert values["machine_id"] == MACHINE_ID, values
    assert values["data_machine_id"] == MACHINE_ID, values
