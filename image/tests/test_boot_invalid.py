"""Boot the image with an invalid configuration on its FAT partition: it must stay fail closed."""

from __future__ import annotations

import peers
from vmlab import PACS_IP, fat_list, fat_read, report_values


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
