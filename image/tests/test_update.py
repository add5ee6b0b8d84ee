"""Issue 21 end to end in the arm64 VM: signed bundles, the health gate, fallback and a power cut.

One VM disk, booted five times in this order (the tests depend on it and run in file order):

1. slot A (the image): a foreign-key bundle is refused; the fleet playbook (playbooks/update.yml,
   run from the LAN over SSH to the box's management address) puts the good bundle into B,
   reboots the box and waits for the gate's verdict;
2. slot B: the gate commits B (the playbook reports it); the broken bundle goes into A, reboot;
3. slot A (broken): medtls cannot start, the gate marks A bad after update.gate_timeout, reboots;
4. slot B again, by itself; the good bundle is being written into A when the power is cut;
5. slot B (the last committed slot).

Besides the fleet playbook, the test guest's report unit (image/tests/guest/medtls-boot-report,
test builds only) runs the steps the test puts on the FAT partition (medtls-test/steps) after each
boot's report, and puts the management address (medtls-test/address) on the bridge; the bundles
are on a second, read-only disk. DICOM C-ECHO from the modality through
the box to the TLS PACS runs the whole time, which measures how long the device is cut off.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import peers
import pytest
from conftest import REPO, technician_files
from vmlab import (
    FAT_OFFSET,
    GROW_MIB,
    PACS_IP,
    Lab,
    copy_disk,
    fat_put,
    ns,
    parse_report,
    partitions,
    report_values,
    run,
)

PKI_DIR = Path(os.environ.get("MEDTLS_RAUC_PKI_DIR", REPO / "build/rauc-pki"))
GATE_TIMEOUT = 30  # the schema's minimum: a fallback does not wait the default 300 s
BOOT_TIMEOUT = 1200  # one boot under TCG, from the reboot to the report
INSTALL_TIMEOUT = 2400
MGMT_IP = "198.18.0.30"  # the box's management address on the bridge, in the lab's LAN prefix
FIRST_USER = "medtls-admin"  # the image's first user (FIRST_USER_NAME's default)
ZEROS_MIB_SHA256 = hashlib.sha256(bytes(1 << 20)).hexdigest()  # slot B of a fresh image
STEPS = [
    "A: install foreign.raucb",
    "B: await-go; install broken.raucb; reboot",  # once the fleet playbook has seen the commit
    "B: install good.raucb",
]
# The broken bundle: its medtls unit runs the daemon on a configuration that does not exist, so
# medtls never starts; `medtls update gate` (its own unit) still works and must fall back.
BROKEN_DROPIN = "/etc/systemd/system/medtls.service.d/zz-update-test-broken.conf"
BROKEN_UNIT = "[Service]\nExecStart=\nExecStart=/usr/bin/medtls run --config /nonexistent.yaml\n"

pytestmark = pytest.mark.skipif(
    os.environ.get("MEDTLS_IMAGE_ARCH", "amd64") != "arm64",
    reason="A/B updates need U-Boot's slot choice: the amd64 test image boots slot A's kernel "
    "directly (docs/updates.md 'Boot selection')",
)


# ----------------------------------------------------------------------------- bundles


def _bundle(rootfs: Path, out: Path, build_id: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDTLS_RAUC", "MEDTLS_B"))}
    env.update(MEDTLS_BUILD_ID=build_id, MEDTLS_RAUC_PKI_DIR=str(PKI_DIR))
    run([str(REPO / "image/scripts/make-bundle.sh"), str(rootfs), str(out)], env=env, timeout=1200)


@pytest.fixture(scope="module")
def bundle_disk(image_dir: Path) -> Path:
    """A read-only ext4 disk with good.raucb, broken.raucb and foreign.raucb, made from the
    image's own rootfs.ext4 (kept next to the image until that file changes)."""
    rootfs = image_dir / "rootfs.ext4"
    assert rootfs.exists(), f"{rootfs}: the image build keeps its root filesystem there"
    work = image_dir / "update-test"
    disk = work / "bundles.ext4"
    stamp = f"{rootfs.stat().st_mtime_ns} {rootfs.stat().st_size}\n"
    if disk.exists() and (work / "stamp").read_text() == stamp:
        return disk
    run(["rm", "-rf", str(work)])
    content = work / "content"
    content.mkdir(parents=True)
    fleet = work / "fleet"
    fleet.mkdir()
    _bundle(rootfs, Path(f"{fleet}/"), "update-test-good")  # medtls-arm64-<version>.raucb
    (good,) = fleet.glob("medtls-arm64-*.raucb")
    os.link(good, content / "good.raucb")
    broken = work / "broken.ext4"
    run(["cp", "--sparse=always", str(rootfs), str(broken)])
    dropin = work / "broken.conf"
    dropin.write_text(BROKEN_UNIT)
    script = work / "broken.debugfs"
    script.write_text(
        f"mkdir {Path(BROKEN_DROPIN).parent}\nwrite {dropin} {BROKEN_DROPIN}\n"
        f"set_inode_field {BROKEN_DROPIN} mode 0100644\n"
    )
    run(["debugfs", "-w", "-f", str(script), str(broken)])
    written = run(["debugfs", "-R", f"cat {BROKEN_DROPIN}", str(broken)]).stdout
    assert written == BROKEN_UNIT, written
    _bundle(broken, content / "broken.raucb", "update-test-broken")
    broken.unlink()
    # Foreign: the same payload, signed by an unrelated CA's signer (rauc resign).
    conf = work / "verify.conf"
    conf.write_text(
        "[system]\ncompatible=medtls-arm64\nbootloader=noop\n\n[keyring]\n"
        f"path={PKI_DIR / 'ca.pem'}\ncheck-purpose=codesign\n"
    )
    run(
        ["rauc", f"--conf={conf}", f"--keyring={PKI_DIR / 'ca.pem'}", "resign",
         f"--cert={PKI_DIR / 'foreign-signing.pem'}", f"--key={PKI_DIR / 'foreign-signing.key'}",
         f"--signing-keyring={PKI_DIR / 'foreign-ca.pem'}",
         str(content / "good.raucb"), str(content / "foreign.raucb")],
        timeout=600,
    )  # fmt: skip
    size = sum(f.stat().st_size for f in content.iterdir()) + (96 << 20)
    with disk.open("wb") as f:
        f.truncate(size)
    run(["mkfs.ext4", "-q", "-F", "-L", "MEDTLS-TEST", "-d", str(content), str(disk)], timeout=600)
    run(["rm", "-rf", str(content)])
    (work / "stamp").write_text(stamp)
    return disk


def fleet_bundle(bundle_disk: Path) -> Path:
    """The good bundle as `make bundle` names it, for the fleet playbook on the controller."""
    (good,) = (bundle_disk.parent / "fleet").glob("medtls-arm64-*.raucb")
    return good


# ----------------------------------------------------------------------------- DICOM echo


@dataclass
class EchoLoop:
    """C-ECHO from the modality through the box to the PACS, once a second, in a thread."""

    netns: str
    log: Path | None = None  # one line per echo, for a look after the run
    results: list[tuple[float, bool]] = field(default_factory=list)  # (time done, success)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        cmd = [peers.ECHOSCU, "-to", "5", "-ta", "5", "-td", "5", "-aec", "PACS", PACS_IP, "104"]
        while not self._stop.is_set():
            try:
                done = run(ns(self.netns, cmd), check=False, timeout=30)
                ok, why = done.returncode == 0, (done.stderr.strip().splitlines() or [""])[-1]
            except subprocess.TimeoutExpired:
                ok, why = False, "timed out"
            self.results.append((time.monotonic(), ok))
            if self.log is not None:
                with self.log.open("a") as f:
                    f.write(f"{time.time():.1f} {'ok' if ok else 'failed: ' + why[:200]}\n")
            self._stop.wait(1)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=40)

    def ok_after(self, t: float, timeout: float) -> float:
        """The time of the first successful echo after `t` (waits for it, bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [when for when, ok in list(self.results) if ok and when > t]
            if done:
                return done[0]
            time.sleep(1)
        tail = list(self.results)[-5:]
        raise AssertionError(f"no DICOM echo through the box within {timeout}s (last: {tail})")

    def outage(self, since: float, until: float) -> float:
        """The longest time between two successful echoes done in [since, until]: with one
        reboot in it, how long the device was cut off."""
        done = [when for when, ok in list(self.results) if ok and since <= when <= until]
        assert len(done) >= 2, f"too few DICOM echoes through the box: {list(self.results)[-10:]}"
        return max(b - a for a, b in itertools.pairwise(done))


# ----------------------------------------------------------------------------- the box


@dataclass
class Box:
    """The VM whose disk goes through all cases, and what it reported on each boot."""

    tmp: Path
    image_dir: Path
    disk: Path
    bundles: Path
    pki: Path
    ssh_key: Path
    lab: Lab | None = None
    echo: EchoLoop | None = None
    storescp: subprocess.Popen | None = None
    plain: subprocess.Popen | None = None  # a plaintext listener on the PACS's DICOM port
    plain_seen: list[str] = field(default_factory=list)  # what it accepted, over every power-on
    boots: list[dict[str, str]] = field(default_factory=list)
    outage: dict[str, float] = field(default_factory=dict)
    seen: int = 0  # report.log characters already taken into a boot
    # host time of each guest marker first seen
    marks: dict[str, float] = field(default_factory=dict)

    def power_on(self) -> None:
        workdir = self.tmp / f"power-{len(self.boots)}"
        workdir.mkdir()
        self.lab = Lab(workdir=workdir, arch="arm64")
        self.seen = 0
        self.lab.start(
            self.disk, Path("/nonexistent"), Path("/nonexistent"), extra_disks=(self.bundles,)
        )
        self.storescp = peers.start_storescp_tls(
            self.lab.lan_ns, self.pki, workdir / "stored", 2762
        )
        # The modality's echoes go to PACS_IP:104 in clear; the box carries them to 2762 in TLS.
        # Anything that reaches this listener crossed the bridge in clear (fail open).
        self.plain = peers.start_listener(self.lab.lan_ns, 104)
        self.echo = EchoLoop(self.lab.mod_ns, workdir / "echo.log")
        self.echo.start()

    def power_off(self, cut: bool = False) -> None:
        if self.echo is not None:
            self.echo.stop()
            self.echo = None
        if self.storescp is not None:
            peers.stop(self.storescp)
            self.storescp = None
        if self.plain is not None:
            self.plain_seen += [x for x in peers.stop(self.plain).splitlines() if "accepted" in x]
            self.plain = None
        if self.lab is not None:
            if cut:
                self.lab.power_cut()
            self.lab.close()
            self.lab = None

    def _text(self) -> str:
        assert self.lab is not None
        log = self.lab.report_log
        return log.read_text(errors="replace") if log.exists() else ""

    def wait_for(self, marker: str, timeout: float) -> float:
        """Wait for a guest line after what earlier boots took; return when it was first seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self._text()[self.seen :]:
                return self.marks.setdefault(marker + str(len(self.boots)), time.monotonic())
            assert self.lab is not None and self.lab.qemu is not None
            if self.lab.qemu.poll() is not None:
                break
            time.sleep(1)
        tail = self.lab.console_log.read_text(errors="replace")[-3000:] if self.lab else ""
        raise AssertionError(f"no {marker!r} from the guest within {timeout}s; console:\n{tail}")

    def next_report(self, slot: str, timeout: float = BOOT_TIMEOUT) -> dict[str, str]:
        """The next complete boot report from slot `slot` (reports of other slots are kept)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._text()
            start = text.find("== begin\n", self.seen)
            end = text.find("== end\n", start) if start >= 0 else -1
            later = text.find("== begin\n", start + 1) if start >= 0 else -1
            if 0 <= later < end:  # a boot that rebooted before its report was complete
                self.seen = later
                continue
            if end >= 0:
                report = parse_report(text[start : end + len("== end\n")])
                self.boots.append(report)
                self.seen = end
                if f"rauc.slot={slot}" in report_values(report["boot-slot"]).get("cmdline", ""):
                    return report
                continue
            assert self.lab is not None and self.lab.qemu is not None
            if self.lab.qemu.poll() is not None:
                break
            time.sleep(2)
        tail = self.lab.console_log.read_text(errors="replace")[-3000:] if self.lab else ""
        raise AssertionError(f"no boot report from slot {slot} within {timeout}s:\n{tail}")

    def step(self, name: str, timeout: float = INSTALL_TIMEOUT) -> dict[str, str]:
        """The output of a step of this boot (`install good.raucb` ...) once it is complete."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._text()[self.seen :]
            nxt = text.find("== begin\n")
            mine = text if nxt < 0 else text[:nxt]
            at = mine.find(f"== install {name}\n")
            if at >= 0 and "== step-done" in mine[at:]:
                return parse_report(mine[at : mine.index("== step-done", at)])
            time.sleep(2)
        raise AssertionError(
            f"step {name} gave no result within {timeout}s:\n{self._text()[-3000:]}"
        )

    def ssh(self, *command: str) -> subprocess.CompletedProcess:
        """A command on the box as its first user, over SSH from the LAN."""
        assert self.lab is not None
        return run(
            ns(self.lab.lan_ns, ["ssh", *SSH_OPTIONS, "-i", str(self.ssh_key),
                                 f"{FIRST_USER}@{MGMT_IP}", *command]),
            check=False, timeout=120,
        )  # fmt: skip

    def fleet_update(self, bundle: Path) -> subprocess.CompletedProcess:
        """playbooks/update.yml from the LAN against this box, as an operator runs it."""
        assert self.lab is not None
        inventory = self.tmp / "fleet-hosts.yml"
        inventory.write_text(
            "all:\n  children:\n    medtls:\n      hosts:\n        box:\n"
            f"          ansible_host: {MGMT_IP}\n"
            f"          ansible_user: {FIRST_USER}\n"
            f"          ansible_ssh_private_key_file: {self.ssh_key}\n"
            f"          ansible_ssh_common_args: {' '.join(SSH_OPTIONS)}\n"
            "          ansible_python_interpreter: /usr/bin/python3\n"
        )
        bindir = Path(sys.executable).parent
        env = [
            f"PATH={bindir}{os.pathsep}{os.environ['PATH']}",
            f"ANSIBLE_COLLECTIONS_PATH={REPO / 'ansible/collections'}",
            "ANSIBLE_NOCOLOR=1",
            f"ANSIBLE_LOCAL_TEMP={self.tmp / 'ansible-local'}",
        ]
        play = [
            str(bindir / "ansible-playbook"), "-i", str(inventory),
            str(REPO / "playbooks/update.yml"),
            "-e", f"medtls_update_bundle={bundle}", "-e", "medtls_become=true",
            # TCG: a boot takes minutes, writing the slot too (a Pi is faster)
            "-e", f"medtls_update_reboot_timeout={BOOT_TIMEOUT}",
            "-e", f"medtls_update_install_timeout={INSTALL_TIMEOUT}",
            "-e", "medtls_update_poll_delay=5",
        ]  # fmt: skip
        result = run(
            ns(self.lab.lan_ns, ["env", *env, *play]), check=False,
            timeout=INSTALL_TIMEOUT + 2 * BOOT_TIMEOUT,
        )  # fmt: skip
        runs = len(list(self.tmp.glob("fleet-update-*.log")))
        (self.tmp / f"fleet-update-{runs + 1}.log").write_text(result.stdout + result.stderr)
        return result

    def console_slots(self) -> list[str]:
        """The slots boot.scr started, in order, over this power-on."""
        assert self.lab is not None
        text = self.lab.console_log.read_text(errors="replace")
        return re.findall(r"medtls-boot: booting slot ([AB]) ", text)


SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=10", "-o", "BatchMode=yes"]  # fmt: skip


def etc_medtls_hashes(report: dict[str, str]) -> dict[str, str]:
    """sha256sum's lines of /etc/medtls in any section (the audit spool before them may lack its
    final newline)."""
    text = "\n".join(report.values())
    return {m[2]: m[1] for m in re.finditer(r"([0-9a-f]{64})  (/etc/medtls/\S+)$", text, re.M)}


def rauc_facts(section: str) -> dict[str, str]:
    return {k: v.strip("'\"") for k, v in report_values(section).items()}


@pytest.fixture(scope="module")
def box(tmp_path_factory, image_dir, pki, bundle_disk):
    tmp = tmp_path_factory.mktemp("update")
    disk = copy_disk(image_dir / "disk.img", tmp / "disk.img", GROW_MIB)
    config = tmp / "medtls.yaml"
    config.write_text(
        (REPO / "examples/ct-modality.yaml").read_text()
        + "\nclock:\n  require_sync: false\n"
        + f"update:\n  gate_timeout: {GATE_TIMEOUT}\n"
        # An audit repository that does not answer: the gate keeps its event in its spool on /data.
        + f"audit:\n  transport: tls\n  host: {PACS_IP}\n  ca: /etc/medtls/ca.pem\n"
    )
    fat_put(disk, technician_files(pki, config))
    steps = tmp / "steps"
    steps.write_text("\n".join(STEPS) + "\n")
    image = f"{disk}@@{FAT_OFFSET}"
    run(["mmd", "-i", image, "::/medtls-test"])
    run(["mcopy", "-i", image, str(steps), "::/medtls-test/steps"])
    address = tmp / "address"
    address.write_text(f"{MGMT_IP}/24\n")
    run(["mcopy", "-i", image, str(address), "::/medtls-test/address"])
    # the key the test build gave the first user (make: FIRST_USER_SSH_KEY=build/image/test-key.pub)
    ssh_key = image_dir.parent / "test-key"
    assert ssh_key.exists(), f"{ssh_key}: the test image's SSH key"
    b = Box(tmp=tmp, image_dir=image_dir, disk=disk, bundles=bundle_disk, pki=pki, ssh_key=ssh_key)
    b.power_on()
    try:
        yield b
    finally:
        b.power_off()
        print(f"\nmeasured outage (arm64 VM under TCG): {b.outage}")


# ----------------------------------------------------------------------------- the cases


def test_a_bundle_signed_by_a_foreign_key_is_refused_without_touching_a_slot(box):
    first = box.next_report("A")
    assert report_values(first["begin"])["medtls"] == "active", first["medtls-journal"]
    # The gate runs on every boot (the image enables it): with nothing pending it gives the
    # committed slot back the attempt boot.scr counted, or three reboots would leave slot A.
    assert "medtls update gate: slot A: no update pending" in first["update-gate-journal"], first[
        "update-gate-journal"
    ]
    assert report_values(first["boot-slot"])["BOOT_A_LEFT"] == "3", first["boot-slot"]
    result = box.step("foreign.raucb")
    install, after = result["install foreign.raucb"], result["after-install foreign.raucb"]
    assert "exit=1" in install, install
    assert "REFUSED" in install and "nothing was installed" in install, install
    assert "signature verification failed" in install, install
    # Neither slot touched: the boot counters are as U-Boot left them, slot B is still empty.
    before_env = report_values(first["boot-slot"])
    after_env = report_values(after)
    for key in ("BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT"):
        assert after_env.get(key) == before_env.get(key), (key, first["boot-slot"], after)
    assert after_env["slot_b_head"] == ZEROS_MIB_SHA256, after


def test_b_fleet_playbook_puts_the_good_bundle_into_b_and_the_gate_commits_it(box, bundle_disk):
    first = box.boots[0]
    since = time.monotonic()  # the box serves from A while it installs; it reboots right after
    play = box.fleet_update(fleet_bundle(bundle_disk))
    out = play.stdout + play.stderr
    assert play.returncode == 0, out[-6000:]
    assert re.search(r"box runs 0\.\S+\+update-test-good from slot B, committed", out), out[-6000:]
    report = box.next_report("B")
    until = box.echo.ok_after(time.monotonic(), 300)
    box.outage["good update"] = box.echo.outage(since, until)
    print(f"\noutage during a good update: {box.outage['good update']:.0f} s")
    assert box.console_slots()[-2:] == ["A", "B"], box.console_slots()
    rauc = rauc_facts(report["rauc-status"])
    assert rauc.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "B", report["rauc-status"]
    status = report["update-status"]
    assert re.search(
        r"^update: slot B committed, version 0\.\S+\+update-test-good", status, re.M
    ), (
        status,
        report["update-gate-journal"],
    )
    assert re.search(r"^\* slot B \(rootfs\.1\): .*boot status good", status, re.M), status
    assert report_values(report["begin"])["medtls"] == "active", report["medtls-journal"]
    # The box's configuration, keys and identity came along on /data.
    assert etc_medtls_hashes(report) == etc_medtls_hashes(first)
    assert "/etc/medtls/device.key" in etc_medtls_hashes(first), first["etc-medtls-sha256"]
    # RAUC grew the bundle's root filesystem (the size of what is installed) to the slot
    # (system.conf resize=true): an update leaves the box the same free space as the image.
    root = report_values(report["rootfs"])
    assert root["source"].endswith("3"), report["rootfs"]  # slot B: partition 3
    assert int(root["fs_bytes"]) > 0.9 * int(root["part_bytes"]), report["rootfs"]
    layout, first_layout = report_values(report["layout"]), report_values(first["layout"])
    assert layout["machine_id"] == first_layout["machine_id"], (layout, first_layout)


def test_b2_the_same_fleet_update_again_changes_nothing(box, bundle_disk):
    """A rollout run again after a stop skips the boxes that committed (docs/updates.md)."""
    play = box.fleet_update(fleet_bundle(bundle_disk))
    out = play.stdout + play.stderr
    assert play.returncode == 0, out[-6000:]
    assert "Nothing to do, the box runs 0." in out, out[-6000:]
    assert re.search(r"box +: ok=\d+ +changed=0 +unreachable=0 +failed=0", out), out[-3000:]
    assert "Copy the bundle to the box" not in out and "Reboot into" not in out, out[-6000:]


def test_c_broken_bundle_falls_back_to_the_committed_slot_by_itself(box):
    since = time.monotonic()  # B serves while it installs into A
    go = box.ssh("sudo", "touch", "/run/medtls-test-go")
    assert go.returncode == 0, go.stdout + go.stderr
    result = box.step("broken.raucb")
    assert "exit=0" in result["install broken.raucb"], result["install broken.raucb"]
    box.wait_for("== rebooting", 120)
    # The broken slot A boots, the gate gives up after GATE_TIMEOUT and reboots; U-Boot starts B.
    report = box.next_report("B", timeout=2 * BOOT_TIMEOUT)
    until = box.echo.ok_after(time.monotonic(), 300)
    box.outage["fallback"] = box.echo.outage(since, until)
    print(f"\noutage during a fallback: {box.outage['fallback']:.0f} s")
    assert box.console_slots()[-3:] == ["B", "A", "B"], box.console_slots()
    rauc = rauc_facts(report["rauc-status"])
    assert rauc.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "B", report["rauc-status"]
    status = report["update-status"]
    fell = re.search(
        r"^update: FELL BACK to B at \S+: not healthy (\d+) s after boot: medtls", status, re.M
    )
    assert fell, status
    # Checks every 5 s, each bounded: the gate gives up soon after update.gate_timeout.
    assert GATE_TIMEOUT <= int(fell.group(1)) <= GATE_TIMEOUT + 30, status
    assert "exit=1" in status, status
    assert re.search(r"^\* slot B \(rootfs\.1\): .*boot status good", status, re.M), status
    assert re.search(r"^  slot A \(rootfs\.0\): .*boot status bad", status, re.M), status
    assert "update_fell_back: fell back to slot B" in report["update-audit-spool"], report[
        "update-audit-spool"
    ]
    # What a technician or the monitoring sees: the daemon (user medtls) reads the gate's state.
    daemon = report["medtls-status"]
    assert re.search(r"^medtls: WARNING", daemon, re.M), daemon
    assert re.search(r"^update: FELL BACK to B at \S+: not healthy", daemon, re.M), daemon
    assert report_values(report["begin"])["medtls"] == "active", report["medtls-journal"]


def _slot_a_superblock(disk: Path) -> bytes:
    start = partitions(disk)[1]["start"] * 512
    with disk.open("rb") as f:
        f.seek(start + 1024)
        return f.read(1024)


def test_d_power_cut_during_an_install_boots_the_old_slot(box, image_dir):
    # Boot 4 (B after the fallback) writes the good bundle into A; cut the power once RAUC has
    # written the start of the slot (the bundle's own ext4 superblock is there), or 60 s in.
    started = box.wait_for("== install-started good.raucb", 300)
    with (image_dir / "rootfs.ext4").open("rb") as f:
        f.seek(1024)
        written = f.read(1024)
    deadline = started + 60
    while time.monotonic() < deadline and _slot_a_superblock(box.disk) != written:
        time.sleep(0.5)
    text = box._text()[box.seen :]
    assert "== install good.raucb" not in text, "the install finished before the power cut"
    box.power_off(cut=True)
    box.power_on()
    report = box.next_report("B")
    box.echo.ok_after(0, 300)
    assert box.console_slots() == ["B"], box.console_slots()
    rauc = rauc_facts(report["rauc-status"])
    assert rauc.get("RAUC_SYSTEM_BOOTED_BOOTNAME") == "B", report["rauc-status"]
    assert report_values(report["begin"])["medtls"] == "active", report["medtls-journal"]
    assert re.search(r"^\* slot B \(rootfs\.1\): .*boot status good", report["update-status"], re.M)


def test_e_nothing_crossed_the_bridge_in_clear_through_five_boots(box):
    """Fail closed throughout: while the box rebooted, ran a slot whose medtls could not start,
    fell back and lost power, the modality's echo (once a second, in clear to port 104) never
    reached the LAN in clear."""
    box.power_off()
    assert box.plain_seen == [], box.plain_seen
    # Reports come from the boots that finish (the broken slot reboots before its report).
    assert len(box.boots) >= 4, [b.get("boot-slot", "")[:80] for b in box.boots]
