"""A real `rauc` (Debian's) on this host, without a real bootloader or block devices: slots are
image files, a private D-Bus system bus carries rauc's service, and the bootloader is rauc's
`custom` backend (this file run as a script) keeping U-Boot's variables in a JSON file with the
semantics of rauc's own uboot backend and of the box's boot script (BOOT_ORDER, BOOT_x_LEFT,
decrement before booting, next slot at 0).

    env = RaucEnv(tmp_path); env.start(); env.boot() -> "A"; env.rauc("status", ...); env.stop()
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ATTEMPTS = 3


def have_rauc() -> bool:
    return bool(shutil.which("rauc") and shutil.which("dbus-daemon"))


# ----------------------------------------------------------------- the custom bootloader backend


def _env_path() -> Path:
    return Path(os.environ["MEDTLS_TEST_UBOOT_ENV"])


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def backend(argv: list[str]) -> int:
    path = _env_path()
    env = _load(path)
    order = env["BOOT_ORDER"].split()
    cmd, args = argv[0], argv[1:]
    if cmd == "get-primary":
        first = next((b for b in order if int(env.get(f"BOOT_{b}_LEFT", "0"), 16) > 0), None)
        if first is None:
            return 1
        print(first)
    elif cmd == "get-state":
        b = args[0]
        good = b in order and int(env.get(f"BOOT_{b}_LEFT", "0"), 16) > 0
        print("good" if good else "bad")
    elif cmd == "set-state":
        b, value = args
        if value == "bad":
            env["BOOT_ORDER"] = " ".join(x for x in order if x != b)
            env[f"BOOT_{b}_LEFT"] = "0"
        else:
            env[f"BOOT_{b}_LEFT"] = f"{ATTEMPTS:x}"
    elif cmd == "set-primary":
        b = args[0]
        env["BOOT_ORDER"] = " ".join([b] + [x for x in order if x != b])
        env[f"BOOT_{b}_LEFT"] = f"{ATTEMPTS:x}"
    else:
        return 2
    path.write_text(json.dumps(env))
    return 0


# ----------------------------------------------------------------- the environment


class RaucEnv:
    def __init__(self, root: Path, keyring: Path | None = None, compatible: str = "medtls-test"):
        self.root = root
        self.uboot = root / "uboot-env.json"
        self.bus_sock = root / "bus.sock"
        self.conf = root / "system.conf"
        self.keyring = keyring
        self.compatible = compatible
        self.formats = "-plain"
        self.procs: list[subprocess.Popen] = []
        self.service: subprocess.Popen | None = None
        self.booted: str | None = None
        self.boot_log = root / "boots.log"

    @property
    def environ(self) -> dict:
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={self.bus_sock}"
        env["MEDTLS_TEST_UBOOT_ENV"] = str(self.uboot)
        return env

    def setup(self) -> None:
        r = self.root
        for name in ("a.img", "b.img"):
            with open(r / name, "wb") as f:
                f.truncate(4 << 20)
        (r / "data").mkdir(exist_ok=True)
        handler = r / "uboot-backend"
        handler.write_text(
            f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            "from rauc_util import backend\nsys.exit(backend(sys.argv[1:]))\n"
        )
        handler.chmod(0o755)
        keyring = self.keyring or (r / "keyring.pem")
        if not keyring.exists():
            keyring.write_text("")
        self.conf.write_text(
            f"[system]\ncompatible={self.compatible}\nbootloader=custom\n"
            f"data-directory={r / 'data'}\nbundle-formats={self.formats}\n\n"
            f"[handlers]\nbootloader-custom-backend={handler}\n\n"
            f"[keyring]\npath={keyring}\n\n"
            f"[slot.rootfs.0]\ndevice={r / 'a.img'}\ntype=raw\nbootname=A\n\n"
            f"[slot.rootfs.1]\ndevice={r / 'b.img'}\ntype=raw\nbootname=B\n"
        )
        self.uboot.write_text(
            json.dumps({"BOOT_ORDER": "A B", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"})
        )
        (r / "bus.conf").write_text(
            '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
            ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
            f"<busconfig><type>session</type><listen>unix:path={self.bus_sock}</listen>"
            '<auth>EXTERNAL</auth><policy context="default"><allow send_destination="*"/>'
            '<allow receive_sender="*"/><allow own="*"/><allow user="*"/></policy></busconfig>\n'
        )
        bus = subprocess.Popen(
            ["dbus-daemon", f"--config-file={r / 'bus.conf'}", "--nofork"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.procs.append(bus)
        _wait(lambda: self.bus_sock.exists(), "dbus-daemon socket")

    def boot(self) -> str:
        """What the box's boot script does at power-on: the first slot in BOOT_ORDER with
        attempts left, its counter decremented; then rauc's service starts on that slot."""
        self.stop_service()
        env = _load(self.uboot)
        order = env["BOOT_ORDER"].split()
        slot = next((b for b in order if int(env.get(f"BOOT_{b}_LEFT", "0"), 16) > 0), None)
        if slot is None:  # the script's last resort: reset the counters, boot the first
            slot = order[0] if order else "A"
            for b in ("A", "B"):
                env[f"BOOT_{b}_LEFT"] = f"{ATTEMPTS:x}"
        env[f"BOOT_{slot}_LEFT"] = f"{int(env[f'BOOT_{slot}_LEFT'], 16) - 1:x}"
        self.uboot.write_text(json.dumps(env))
        self.booted = slot
        with open(self.boot_log, "a") as f:
            f.write(slot + "\n")
        with open(self.root / f"rauc-service-{slot}.log", "ab") as log:
            self.service = subprocess.Popen(
                ["rauc", "service", f"--conf={self.conf}", f"--override-boot-slot={slot}"],
                stdout=log, stderr=subprocess.STDOUT, env=self.environ,
            )  # fmt: skip
        _wait(lambda: self.rauc("status", check=False).returncode == 0, "rauc service")
        return slot

    def rauc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["rauc", f"--conf={self.conf}", *args],
            capture_output=True, text=True, env=self.environ, timeout=60, check=check,
        )  # fmt: skip

    def status_json(self) -> str:
        return self.rauc("status", "--detailed", "--output-format=json").stdout

    def uboot_env(self) -> dict:
        return _load(self.uboot)

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(10)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
            self.service = None

    def stop(self) -> None:
        self.stop_service()
        for p in self.procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


def _wait(cond, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f} s")


# ----------------------------------------------------------------- throwaway keys and bundles


def make_ca(out: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA and a signing certificate under it (openssl): (ca.pem, signing.pem, signing.key)."""
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        out / f"{name}-{x}"
        for x in ("ca.key", "ca.pem", "signing.key", "signing.csr", "signing.pem")
    )
    ext = out / f"{name}-ext.cnf"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")

    def ossl(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, timeout=60)

    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(ca_key), "-out", str(ca), "-days", "30", "-subj", f"/CN={name} test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name} test signing")  # fmt: skip
    ossl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "30", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


def make_bundle(
    out: Path,
    cert: Path,
    key: Path,
    version: str,
    compatible: str = "medtls-test",
    fmt: str = "verity",
    keyring: Path | None = None,
) -> Path:
    """A verity bundle with one tiny raw image for slot class rootfs."""
    content = out / f"content-{version}"
    content.mkdir(parents=True)
    (content / "rootfs.img").write_bytes(
        version.encode() + os.urandom(65536)
    )  # incompressible: squashfs > 4 KiB
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\n\n[bundle]\nformat={fmt}\n\n"
        "[image.rootfs]\nfilename=rootfs.img\n"
    )
    bundle = out / f"medtls-{version}.raucb"
    subprocess.run(
        ["rauc", "bundle", f"--cert={cert}", f"--key={key}",
         *([f"--keyring={keyring}"] if keyring else []), str(content), str(bundle)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return bundle
