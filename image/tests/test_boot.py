"""Boot the built image in QEMU between two lab namespaces and check what a user would see."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import peers
import pytest
from conftest import BOOT_TIMEOUT
from pydicom.data import get_testdata_file
from vmlab import (
    GROW_MIB,
    MODALITY_IP,
    PACS_IP,
    Lab,
    boot_env_read,
    boot_env_write,
    fat_list,
    fat_read,
    partitions,
    report_values,
)

CT = get_testdata_file("CT_small.dcm")


def test_boots_to_running_without_failed_units(appliance):
    _, _, report = appliance
    values = report_values(report["begin"])
    assert report["failed"].strip() == "", f"failed units:\n{report['failed']}"
    assert values["state"] == "running"


def test_medtls_service_is_active(appliance):
    _, _, report = appliance
    assert report_values(report["begin"])["medtls"] == "active", report["medtls-journal"]


def test_interception_ruleset_is_loaded(appliance):
    _, _, report = appliance
    ruleset = report["ruleset"]
    assert re.search(r"^table \w+ medtls", ruleset, re.M), ruleset
    assert "tproxy" in ruleset, ruleset


def test_data_partition_grew_to_the_end_of_the_disk(appliance, image_dir):
    _, disk, report = appliance
    values = report_values(report["layout"])
    built = partitions(image_dir / "disk.img")
    mib = 1024 * 1024
    # p4 reaches the end of the larger disk; its filesystem grew with it (ext4 metadata keeps
    # statvfs below the partition size, so half the growth is the bar).
    assert disk.stat().st_size == int(report_values(report["rootfs"])["disk_bytes"])
    assert int(values["data_part_bytes"]) >= disk.stat().st_size - built[3]["start"] * 512 - mib, (
        values,
        report["growroot-journal"],
    )
    assert int(values["data_fs_bytes"]) >= built[3]["size"] * 512 + GROW_MIB * mib // 2, (
        values,
        report["growroot-journal"],
    )


def test_the_box_sees_the_ab_layout(appliance, image_dir):
    """Issue 21: boot, root A, root B (same fixed size), data; fixed PARTUUIDs on every box."""
    _, disk, report = appliance
    values = report_values(report["layout"])
    table = json.loads(report["sfdisk"])["partitiontable"]
    parts = table["partitions"]
    assert table["label"] == "dos" and table["id"] == "0x6d656474", table
    assert len(parts) == 4, parts
    assert parts[1]["size"] == parts[2]["size"], parts
    assert parts[0]["start"] + parts[0]["size"] <= parts[1]["start"]
    assert parts[1]["start"] + parts[1]["size"] <= parts[2]["start"]
    assert parts[2]["start"] + parts[2]["size"] <= parts[3]["start"]
    # The root slots are not grown (the image's sizes), the data partition took the new space.
    built = partitions(image_dir / "disk.img")
    assert [p["size"] for p in parts[:3]] == [p["size"] for p in built[:3]]
    assert (parts[3]["start"] + parts[3]["size"]) * 512 >= disk.stat().st_size - 1024 * 1024
    rows = [line.split() for line in report["partuuids"].splitlines()]
    uuids = {row[0]: row[1:] for row in rows if len(row) >= 2}
    found = sorted(cols[0] for cols in uuids.values() if cols[0].startswith("6d656474-"))
    assert found == ["6d656474-01", "6d656474-02", "6d656474-03", "6d656474-04"], uuids
    assert next(c for c in uuids.values() if c[0] == "6d656474-04")[1:] == ["MEDTLS-DATA", "ext4"]
    # The booted root is slot A, /data is p4.
    assert "root=PARTUUID=6d656474-02" in values["cmdline"], values
    assert report_values(report["rootfs"])["source"] == parts[1]["node"], report["rootfs"]
    assert values["data_source"] == parts[3]["node"] and values["data_fstype"] == "ext4", values


def test_persistent_paths_are_on_the_data_partition(appliance):
    _, _, report = appliance
    values = report_values(report["layout"])
    paths = {k.split(":", 1)[1]: v for k, v in values.items() if k.startswith("ondata:")}
    assert len(paths) == 5, paths
    for path, state in paths.items():
        seed = report["data-seed-journal"]
        assert state.startswith("yes "), f"{path} is not on /data: {state}\n{seed}"
    # The machine-id is copied (systemd reads it before any mount): /data holds the same id.
    assert re.fullmatch(r"[0-9a-f]{32}", values["machine_id"]), values
    assert values["data_machine_id"] == values["machine_id"], values
    assert values["medtls_yaml_readable_by_medtls"] == "yes", report["etc-medtls"]
    assert "seeded /data/etc/medtls from /etc/medtls" in report["data-seed-journal"]


def test_first_boot_config_moved_off_the_fat_partition(appliance):
    _, disk, report = appliance
    listing = report["etc-medtls"]
    assert re.search(r"^-rw-r----- .* root medtls .* medtls\.yaml$", listing, re.M), listing
    assert re.search(r"^-rw-r----- .* root medtls .* device\.key$", listing, re.M), listing
    assert "medtls" not in fat_list(disk).lower().replace("medtls-", "")
    assert "installed /etc/medtls/medtls.yaml" in report["firstboot-journal"]


def test_fat_partition_carries_the_configuration_template(appliance):
    _, disk, _ = appliance
    example = (Path(__file__).resolve().parents[2] / "examples/ct-modality.yaml").read_text()
    assert fat_read(disk, "::/medtls-example/medtls.yaml") == example
    assert "medtls check" in fat_read(disk, "::/medtls-example/README.txt")


def test_cstore_from_modality_reaches_tls_pacs_through_the_vm(appliance, pki, tmp_path):
    lab, _, _ = appliance
    out = tmp_path / "stored"
    scp = peers.start_storescp_tls(lab.lan_ns, pki, out, 2762)
    try:
        scu = peers.storescu(lab.mod_ns, PACS_IP, 104, CT)
    finally:
        log = peers.stop(scp)
    stored = list(out.iterdir())
    assert scu.returncode == 0, f"storescu: {scu.stdout}{scu.stderr}\nstorescp: {log}"
    assert len(stored) == 1, f"storescp stored {stored}: {log}"
    assert stored[0].stat().st_size > 1000


@pytest.mark.parametrize("port", [104, 2575])
def test_plain_tcp_from_lan_does_not_reach_the_device(appliance, port):
    lab, _, _ = appliance
    # The wire through the VM works (ICMP crosses the bridge untouched), so a refusal below is
    # the interception's doing.
    assert peers.ping(lab.lan_ns, MODALITY_IP), "no ICMP from the LAN to the device through the VM"
    listener = peers.start_listener(lab.mod_ns, port)
    try:
        result = peers.probe(lab.lan_ns, MODALITY_IP, port)
    finally:
        seen = peers.stop(listener)
    assert "accepted" not in seen, f"plain TCP from the LAN reached the device: {seen}"
    assert result.startswith("refused"), result


CLEAR = "\x1b[H\x1b[2J"  # medtls console starts every redraw with it
PROMPT = "Press Enter to log in."


def console_screen(lab, pattern: str, timeout: float = 90) -> str:
    """The last complete status screen on the serial console that matches `pattern`."""
    deadline = time.monotonic() + timeout
    screens: list[str] = []
    while time.monotonic() < deadline:
        text = lab.console_log.read_text(errors="replace")
        screens = [s for s in text.split(CLEAR) if PROMPT in s]
        if screens and re.search(pattern, screens[-1]):
            return screens[-1]
        time.sleep(2)
    tail = screens[-1] if screens else lab.console_log.read_text(errors="replace")[-3000:]
    raise AssertionError(f"no status screen matching {pattern!r} on the serial console:\n{tail}")


def test_serial_console_shows_the_status_screen(appliance):
    lab, _, _ = appliance
    # serial-getty on the kernel console runs `medtls console` (roles/proxy getty drop-in) and
    # redraws every 5 s; the fixture sets clock.require_sync: false (no NTP in the lab).
    screen = console_screen(lab, r"medtls: \w+  \(version \S+, pid \d+")
    assert re.search(r"^medtls box medtls  \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", screen, re.M), screen
    assert "state:     CLOCK NOT SYNCHRONISED" in screen, screen
    assert "traffic:   passing, TLS enforced" in screen, screen
    assert "medtls: WARNING  (version " in screen, screen
    assert "WARNING: clock not synchronised, validating anyway" in screen, screen
    # The console keeps the top of the status when it does not fit.
    assert re.search(r"^identity: +CN=ct-modality", screen, re.M), screen
    # Kernel messages (the ruleset's rate-limited drop log) may follow the prompt on the console.
    assert PROMPT in screen, screen


def test_board_led_shows_the_state(appliance):
    _, _, report = appliance
    leds = report.get("leds", "").split()
    if not {"ACT", "led0"} & set(leds):
        pytest.skip(
            f"the VM exposes no board LED (/sys/class/leds: {' '.join(leds) or 'empty'}); the "
            "patterns are tested on a fake LED directory (proxy/tests/ops/test_led.py)"
        )
    assert re.search(r"^led (ACT|led0): clock_unsynced", report["led-journal"], re.M), report[
        "led-journal"
    ]


# Issue 20 (pi-gen parity): only systemd-networkd configures the bridge and its ports, and the
# box holds no address on them (NetworkManager, dhcpcd, cloud-init ... are masked by the
# interception role, which the pi-gen stage runs too).
BRIDGE_LINKS = {
    "br0": "/etc/systemd/network/40-medtls-bridge.network",
    "eth0": "/etc/systemd/network/30-medtls-device.network",
    "eth1": "/etc/systemd/network/30-medtls-lan.network",
}


def test_only_systemd_networkd_configures_the_bridge_and_ports(appliance):
    import json

    _, _, report = appliance
    links = {i["Name"]: i for i in json.loads(report["networkctl"])["Interfaces"]}
    for name, network_file in BRIDGE_LINKS.items():
        assert name in links, f"{name} missing: {sorted(links)}"
        assert links[name].get("AdministrativeState") == "configured", links[name]
        assert links[name].get("AddressState") == "off", links[name]
        assert links[name].get("NetworkFile") == network_file, links[name]
    foreign = report_values(report["foreign-network"])
    for unit, state in foreign.items():
        if unit.endswith(".service"):
            enabled, active = state.split("/")
            assert enabled == "masked" and active != "active", f"{unit}: {state}"
    assert foreign["netplan-generator"] == "/dev/null", foreign


def test_the_box_holds_no_address_on_the_bridge_or_its_ports(appliance):
    import json

    _, _, report = appliance
    links = {i["ifname"]: i for i in json.loads(report["port-addresses"])}
    for name in BRIDGE_LINKS:
        assert name in links, f"{name} missing: {sorted(links)}"
        assert links[name].get("addr_info") == [], f"{name}: {links[name].get('addr_info')}"
    assert links["eth0"].get("master") == "br0" and links["eth1"].get("master") == "br0"


def test_image_sbom_is_valid_and_lists_what_the_booted_image_holds(appliance, image_dir):
    """Issue 20: the SBOM build-image.sh wrote (publish.sh ships it next to the image)."""
    import json

    import sbom_check

    _, _, report = appliance
    sbom_path = image_dir / "sbom.cdx.json"
    assert sbom_path.exists(), f"{sbom_path}: the image build wrote no SBOM"
    assert sbom_check.problems(sbom_path) == []
    components = json.loads(sbom_path.read_text())["components"]
    listed = {
        (c["name"], prop["value"], c["version"])
        for c in components
        for prop in c.get("properties", [])
        if prop["name"] == "deb:architecture"
    }
    lines = report["packages"].splitlines()
    rows = [line.split("\t") for line in lines if line.count("\t") == 3]
    installed = {tuple(row[1:]) for row in rows if row[0] == "installed"}
    assert listed == installed, (sorted(listed - installed)[:20], sorted(installed - listed)[:20])
    medtls = next(c for c in components if c["name"] == "medtls")
    # A Debian package's version carries a revision (0.2.0-1); `medtls --version` does not.
    upstream = medtls["version"]
    if medtls["purl"].startswith("pkg:deb/"):
        upstream = re.sub(r"-[^-]*$", "", upstream)
    assert report_values(report["packages"])["medtls-version"] == f"medtls {upstream}"


# Issue 21, boot selection (docs/updates.md "Boot selection"): U-Boot's boot.scr picks the root slot
# from the counters in bootslot.env on the FAT partition; Linux reads the same file (fw_printenv)
# and RAUC sees the slot boot.scr booted. amd64 boots slot A's kernel directly (no U-Boot).


def boot_lines(lab: Lab) -> str:
    """boot.cmd's own lines on the console (the whole tail when there are none)."""
    console = lab.console_log.read_text(errors="replace")
    lines = [line for line in console.splitlines() if "medtls-boot:" in line or "U-Boot 20" in line]
    return "\n".join(lines) or console[-3000:]


def boot_slot_facts(report: dict[str, str]) -> tuple[str, dict[str, str], dict[str, str]]:
    values = report_values(report["boot-slot"])
    rauc = {k: v.strip("'\"") for k, v in report_values(report["rauc-status"]).items()}
    return values.get("cmdline", ""), values, rauc


def test_boots_slot_a_and_linux_reads_the_boot_counters(appliance, arch):
    lab, _, report = appliance
    cmdline, env, rauc = boot_slot_facts(report)
    assert "root=PARTUUID=6d656474-02" in cmdline and "rauc.slot=A" in cmdline, cmdline
    assert rauc.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "A", report["rauc-status"]
    assert rauc.get("RAUC_SYSTEM_COMPATIBLE") == f"medtls-{arch}", report["rauc-status"]
    # fw_printenv reads the file U-Boot (or the image build) wrote: CRC valid, all three counters.
    assert "CRC" not in report["boot-slot"], report["boot-slot"]
    assert env.get("BOOT_ORDER") == "A B", report["boot-slot"]
    assert env.get("BOOT_A_LEFT", "").isdigit(), report["boot-slot"]
    assert env.get("BOOT_B_LEFT") == "3", report["boot-slot"]
    if arch == "arm64":
        console = boot_lines(lab)
        assert "medtls-boot: trying slot A, 2 attempts left after this one" in console, console
        assert "medtls-boot: booting slot A (" in console, console


def test_an_unbootable_slot_b_falls_back_to_a_by_itself(appliance, arch, tmp_path):
    """Last test of the module: it stops the shared VM and boots its disk once more."""
    if arch != "arm64":
        pytest.skip("amd64 boots slot A's kernel directly; the slot choice is U-Boot's (arm64)")
    lab, disk, _ = appliance
    lab.close()
    # What `fw_setenv BOOT_ORDER "B A"` (RAUC marking B primary) leaves; slot B holds no system.
    boot_env_write(disk, {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
    again = Lab(workdir=tmp_path, arch=arch)
    try:
        again.start(disk, Path("/nonexistent"), Path("/nonexistent"))
        report = again.wait_report(BOOT_TIMEOUT[arch])
    finally:
        again.close()
    cmdline, env, rauc = boot_slot_facts(report)
    console = boot_lines(again)
    assert "medtls-boot: slot B has no /boot/vmlinuz or /boot/initrd.img" in console, console
    assert "rauc.slot=A" in cmdline and "root=PARTUUID=6d656474-02" in cmdline, cmdline
    assert rauc.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "A", report["rauc-status"]
    assert env.get("BOOT_B_LEFT") == "0", report["boot-slot"]
    assert report_values(report["begin"])["medtls"] == "active", report["medtls-journal"]
    assert boot_env_read(disk)["BOOT_B_LEFT"] == "0"
