"""A QEMU appliance VM between two lab network namespaces (modality side, LAN side).

The VM's first NIC (eth0, device port) and second NIC (eth1, LAN port) are tap devices; each
tap is moved into its own namespace after QEMU has opened it, so the lab needs no bridge, veth
or address in the host's namespace. Everything is named with a per-run prefix and removed by
`close()`, also after a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

MODALITY_IP = "198.18.0.10"
MODALITY_MAC = "02:00:5e:10:00:10"  # examples/ct-modality.yaml device.mac
PACS_IP = "198.18.0.20"
PREFIX_LEN = 24
FAT_OFFSET = "4M"  # make-disk.sh: the FAT partition (p1) starts at 4 MiB
# make-disk.sh's MBR disk identifier: the partitions are PARTUUID=6d656474-01..04 on every box.
DISK_ID = "6d656474"
# Direct kernel boot (no boot loader) starts root slot A, as U-Boot's boot script does first.
ROOT_A = f"root=PARTUUID={DISK_ID}-02 rauc.slot=A"
# The VM's disk is this much larger than the image, like a larger card: /data must grow into it.
GROW_MIB = 1024

QEMU = {
    "amd64": ["qemu-system-x86_64", "-M", "q35", "-cpu", "max"],
    "arm64": ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72"],
}
# arm64 boots as the Pi does: U-Boot (Debian's qemu_arm64 build as firmware) runs boot.scr from the
# FAT partition, which picks the root slot (docs/updates.md "Boot selection"). The amd64 developer
# loop boots slot A's kernel directly, with the command line boot.scr would give slot A.
UBOOT_BIOS = Path(os.environ.get("MEDTLS_UBOOT_BIOS", "/usr/lib/u-boot/qemu_arm64/u-boot.bin"))
DIRECT_BOOT_APPEND = f"console=ttyS0,115200 {ROOT_A} rw net.ifnames=0 panic=-1"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def ns(name: str, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *cmd]


def parse_report(text: str) -> dict[str, str]:
    """Split the guest report into sections: '== name' lines start a section."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("== "):
            current = line[3:].strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return {k: "\n".join(v) for k, v in sections.items()}


def report_values(begin: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in begin.splitlines() if "=" in line)


def fat_put(disk: Path, files: dict[str, Path]) -> None:
    """Put the technician's files into medtls/ on the disk's FAT partition (mtools, no mount)."""
    image = f"{disk}@@{FAT_OFFSET}"
    run(["mmd", "-i", image, "::/medtls"])
    for name, src in files.items():
        run(["mcopy", "-i", image, str(src), f"::/medtls/{name}"])


def fat_list(disk: Path, path: str = "::/") -> str:
    return run(["mdir", "-b", "-i", f"{disk}@@{FAT_OFFSET}", path], check=False).stdout


def fat_read(disk: Path, path: str) -> str:
    return run(["mtype", "-i", f"{disk}@@{FAT_OFFSET}", path], check=False).stdout


# boot.cmd / configure-boot.sh: the slot counters, a CRC'd U-Boot environment on the FAT partition.
BOOT_ENV_FILE = "::/bootslot.env"
BOOT_ENV_SIZE = 0x4000


def boot_env_decode(blob: bytes) -> dict[str, str]:
    """A U-Boot environment (CRC32, NUL-separated name=value, NUL NUL) as fw_printenv reads it."""
    if len(blob) != BOOT_ENV_SIZE:
        raise ValueError(f"boot environment is {len(blob)} bytes, not {BOOT_ENV_SIZE}")
    crc, data = int.from_bytes(blob[:4], "little"), blob[4:]
    if zlib.crc32(data) != crc:
        raise ValueError("boot environment CRC mismatch")
    entries = data.split(b"\0\0", 1)[0].split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if e)


def boot_env_encode(values: dict[str, str]) -> bytes:
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in sorted(values.items())) + b"\0"
    data = data.ljust(BOOT_ENV_SIZE - 4, b"\0")
    return zlib.crc32(data).to_bytes(4, "little") + data


def boot_env_read(disk: Path) -> dict[str, str]:
    blob = run(["mtype", "-i", f"{disk}@@{FAT_OFFSET}", BOOT_ENV_FILE], text=False).stdout
    return boot_env_decode(blob)


def boot_env_write(disk: Path, values: dict[str, str]) -> None:
    """What `fw_setenv` does on the box, done on the disk of a stopped VM."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(boot_env_encode(values))
        f.flush()
        run(["mcopy", "-o", "-i", f"{disk}@@{FAT_OFFSET}", f.name, BOOT_ENV_FILE])


@dataclass
class Lab:
    workdir: Path
    arch: str = "amd64"
    prefix: str = field(default_factory=lambda: "mti" + secrets.token_hex(3))
    qemu: subprocess.Popen | None = None

    @property
    def mod_ns(self) -> str:
        return f"{self.prefix}-mod"

    @property
    def lan_ns(self) -> str:
        return f"{self.prefix}-lan"

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def report_log(self) -> Path:
        return self.workdir / "report.log"

    def start(
        self,
        disk: Path,
        kernel: Path,
        initrd: Path,
        memory_mib: int = 1024,
        extra_disks: tuple[Path, ...] = (),
    ) -> None:
        """`extra_disks`: read-only virtio disks after the box's own (test material)."""
        taps = (f"{self.prefix}d", f"{self.prefix}l")
        for name in (self.mod_ns, self.lan_ns):
            run(["ip", "netns", "add", name])
            run(ns(name, ["ip", "link", "set", "lo", "up"]))
            run(ns(name, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]))
            run(ns(name, ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]))
        for tap in taps:
            run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
            # An UP tap shows NO-CARRIER until a process attaches: that is how attach is seen.
            run(["ip", "link", "set", tap, "up"])
        if self.arch == "arm64":
            # A reboot (or boot.scr's reset) goes back through U-Boot, as on the Pi.
            firmware = ["-bios", str(UBOOT_BIOS)]
        else:
            firmware = ["-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
                        "-append", DIRECT_BOOT_APPEND]  # fmt: skip
        cmd = [
            *QEMU[self.arch],
            "-m", str(memory_mib), "-smp", "2",
            "-display", "none", "-monitor", "none",
            "-serial", f"file:{self.console_log}",
            *firmware,
            "-drive", f"file={disk},if=none,id=d0,format=raw,cache=unsafe",
            "-device", "virtio-blk-pci,drive=d0",
            "-device", "virtio-serial-pci",
            "-chardev", f"file,id=rep,path={self.report_log}",
            "-device", "virtserialport,chardev=rep,name=medtls.report",
            "-netdev", f"tap,id=n0,ifname={taps[0]},script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:18:00:01",
            "-netdev", f"tap,id=n1,ifname={taps[1]},script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=n1,mac=52:54:00:18:00:02",
        ]  # fmt: skip
        for i, extra in enumerate(extra_disks, 1):
            cmd += ["-drive", f"file={extra},if=none,id=d{i},format=raw,readonly=on",
                    "-device", f"virtio-blk-pci,drive=d{i}"]  # fmt: skip
        self.qemu = subprocess.Popen(
            cmd,
            stdout=(self.workdir / "qemu.out").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_taps_attached(taps)
        for tap, name, ip in ((taps[0], self.mod_ns, MODALITY_IP), (taps[1], self.lan_ns, PACS_IP)):
            run(["ip", "link", "set", tap, "netns", name])
            if name == self.mod_ns:
                run(ns(name, ["ip", "link", "set", tap, "address", MODALITY_MAC]))
            run(ns(name, ["ip", "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", tap]))
            run(ns(name, ["ip", "link", "set", tap, "up"]))
            if "LOWER_UP" not in run(ns(name, ["ip", "-o", "link", "show", tap])).stdout:
                raise RuntimeError(f"{tap} lost QEMU's carrier after moving to {name}")

    def _wait_taps_attached(self, taps: tuple[str, str], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.qemu is not None and self.qemu.poll() is not None:
                out = (self.workdir / "qemu.out").read_text()
                raise RuntimeError(f"qemu exited with {self.qemu.returncode}: {out.strip()}")
            flags = [run(["ip", "-o", "link", "show", t], check=False).stdout for t in taps]
            if all(f and "NO-CARRIER" not in f and "LOWER_UP" in f for f in flags):
                return
            time.sleep(0.2)
        raise RuntimeError(f"qemu did not attach to {taps} within {timeout}s")

    def wait_report(self, timeout: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.report_log.read_text(errors="replace") if self.report_log.exists() else ""
            if "== end" in text:
                return parse_report(text)
            if self.qemu is not None and self.qemu.poll() is not None:
                break
            time.sleep(1)
        tail = self.console_log.read_text(errors="replace")[-3000:]
        raise TimeoutError(f"no boot report within {timeout}s; console tail:\n{tail}")

    def power_cut(self) -> None:
        """Kill QEMU at once: the disk keeps what the guest had written, nothing more."""
        if self.qemu is not None and self.qemu.poll() is None:
            os.killpg(self.qemu.pid, signal.SIGKILL)
            self.qemu.wait()

    def close(self) -> None:
        if self.qemu is not None and self.qemu.poll() is None:
            os.killpg(self.qemu.pid, signal.SIGTERM)
            try:
                self.qemu.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.qemu.pid, signal.SIGKILL)
                self.qemu.wait()
        for name in (self.mod_ns, self.lan_ns):
            run(["ip", "netns", "del", name], check=False)
        for tap in (f"{self.prefix}d", f"{self.prefix}l"):
            run(["ip", "link", "del", tap], check=False)


def copy_disk(src: Path, dst: Path, grow_mib: int = 0) -> Path:
    """A private sparse copy, so every boot starts from the built image; `grow_mib` makes the
    disk larger than the image, like a card larger than the image flashed onto it."""
    run(["cp", "--sparse=always", str(src), str(dst)])
    if grow_mib:
        os.truncate(dst, dst.stat().st_size + grow_mib * 1024 * 1024)
    return dst


def partition_table(disk: Path) -> dict:
    """The disk image's partition table (sfdisk --json): id, and partitions with start and size
    in 512-byte sectors."""
    return json.loads(run(["sfdisk", "--json", str(disk)]).stdout)["partitiontable"]


def partitions(disk: Path) -> list[dict]:
    return partition_table(disk)["partitions"]


def data_put(disk: Path, files: dict[str, str]) -> None:
    """Write files (path on /data -> text) into the disk's data partition (p4) with debugfs, no
    mount: the state a box's /data already holds before the boot."""
    p4 = partitions(disk)[3]
    fs = f"{disk}?offset={p4['start'] * 512}"
    cmds: list[str] = []
    made: set[str] = set()
    for path, text in files.items():
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/" + "/".join(parts[:i])
            if d not in made:
                made.add(d)
                cmds.append(f"mkdir {d}")
        src = disk.parent / ("data-put-" + parts[-1])
        src.write_text(text)
        cmds += [f"write {src} {path}", f"set_inode_field {path} mode 0100640"]
    script = disk.parent / "data-put.debugfs"
    script.write_text("\n".join(cmds) + "\n")
    run(["debugfs", "-w", "-f", str(script), fs])
    for path in files:
        out = run(["debugfs", "-R", f"stat {path}", fs]).stdout
        if "Inode:" not in out:
            raise RuntimeError(f"debugfs did not write {path} into {fs}")
