"""The medtls Debian package: lintian clean, versioned like the code, and installed, upgraded and
downgraded with apt in a throwaway trixie container (the Molecule base image, no network)."""

import hashlib
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("MEDTLS_MOLECULE_IMAGE", "medtls/trixie-systemd:1")
# The profile and failure level docs/packaging.md states; overrides live in packaging/debian.
LINTIAN = ["lintian", "--profile", "debian", "--fail-on", "error,warning", "--info"]
SITE_FILES = {
    # What the roles put next to the package: apt must leave them as they are.
    "/etc/medtls/medtls.yaml": "# the site configuration\nmode: transparent\n",
    "/etc/systemd/system/medtls.service.d/medtls-role.conf": "[Service]\nLimitNOFILE=4096\n",
}
UNITS = (
    "medtls.service", "medtls-led.service", "medtls-failclosed.service",
    "medtls-interception.service", "medtls-enroll.service", "medtls-enroll.timer",
    "medtls-crl-fetch.service", "medtls-crl-fetch.timer", "medtls-keygen.service",
    "medtls-update-gate.service",
)  # fmt: skip
TIMER_STARTED = ("medtls-enroll.service", "medtls-crl-fetch.service")
# Shipped next to the units (packaging/systemd/): what the fail-closed unit loads.
DATA = {"failclosed.nft": "./usr/share/medtls/failclosed.nft"}
# docker run flags for systemd as PID 1, as Molecule runs the image (.config/molecule/config.yml).
SYSTEMD_FLAGS = [
    "--cap-add", "NET_ADMIN", "--cap-add", "SYS_ADMIN", "--cgroupns", "host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
    "--stop-signal", "SIGRTMIN+3",
]  # fmt: skip


def source_version() -> str:
    text = (REPO / "proxy/medtls/__init__.py").read_text()
    return re.search(r'^__version__ = "(.*)"$', text, re.M).group(1)


def build(out: Path, version: str | None = None) -> Path:
    env = dict(os.environ)
    if version:
        env["MEDTLS_DEB_VERSION"] = version
    done = subprocess.run(
        [REPO / "scripts/build-deb.sh", out], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def debs(tmp_path_factory):
    """The package of this checkout and one with a higher version (as the next release)."""
    out = tmp_path_factory.mktemp("deb")
    current = build(out)
    newer = build(out, source_version() + "+test1")
    return current, newer


def start_box(debs, *flags: str, command: tuple[str, ...] = ()):
    name = f"medtls-deb-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "-d", "--rm", "--network", "none", "--name", name, *flags, IMAGE,
         *command],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    for deb in debs:
        subprocess.run(["docker", "cp", deb, f"{name}:/var/tmp/"], check=True, timeout=60)
    return Box(name)


@pytest.fixture
def box(debs):
    """A trixie container that only sleeps: apt and dpkg act on it through docker exec."""
    started = start_box(debs, command=("sleep", "900"))
    try:
        yield started
    finally:
        subprocess.run(["docker", "rm", "-f", started.name], capture_output=True, timeout=60)


@pytest.fixture
def systemd_box(debs):
    """A trixie container running systemd as PID 1 (as Molecule's): units load, nothing starts
    that is not enabled."""
    started = start_box(debs, *SYSTEMD_FLAGS)
    try:
        # degraded is fine (units a container cannot run); the manager must be up.
        # The bus appears a moment after PID 1 starts: poll, bounded.
        state = started.run(
            "for i in $(seq 120); do s=$(systemctl is-system-running 2>/dev/null);"
            " case $s in running|degraded) echo $s; exit 0;; esac; sleep 0.5; done; echo $s",
            check=False,
        )
        assert state.stdout.strip() in ("running", "degraded"), state.stdout + state.stderr
        yield started
    finally:
        subprocess.run(["docker", "rm", "-f", started.name], capture_output=True, timeout=60)


class Box:
    def __init__(self, name: str):
        self.name = name

    def run(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["docker", "exec", "-e", "DEBIAN_FRONTEND=noninteractive", self.name,
             "sh", "-c", script],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if check:
            assert done.returncode == 0, f"{script}: {done.stdout}{done.stderr}"
        return done

    def apt_install(self, deb: Path, *extra: str) -> None:
        # Offline: the dependencies are in the image, the recommended ACME stack is not. /var/tmp:
        # a systemd box mounts a fresh /tmp.
        options = " ".join(["-y", "-q", "--no-install-recommends", *extra])
        self.run(f"apt-get install {options} /var/tmp/{deb.name}")

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.run(f"cat {path}").stdout.encode()).hexdigest()

    def assert_installed(self, version: str) -> None:
        assert self.run("medtls --version").stdout.strip() == f"medtls {version}"
        assert self.run("dpkg-query -W -f '${Version}' medtls").stdout == version
        # Every file of the package matches dpkg's checksums.
        self.run("debsums -s medtls")


def test_version_is_the_code_version(debs):
    current, newer = debs
    version = source_version()
    field = subprocess.run(
        ["dpkg-deb", "-f", current, "Version"], capture_output=True, text=True, check=True
    )
    assert field.stdout.strip() == version
    changelog = subprocess.run(
        ["dpkg-parsechangelog", "-l", REPO / "packaging/debian/changelog", "-S", "Version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert changelog.stdout.strip() == version
    assert current.name == f"medtls_{version}_all.deb"
    assert newer.name == f"medtls_{version}+test1_all.deb"


def test_lintian_clean(debs):
    for deb in debs:
        done = subprocess.run([*LINTIAN, deb], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr


def test_contents(debs):
    listing = subprocess.run(
        ["dpkg-deb", "-c", debs[0]], capture_output=True, text=True, check=True
    ).stdout
    assert "./usr/bin/medtls\n" in listing
    assert "./usr/lib/python3/dist-packages/medtls/cli.py\n" in listing
    assert "./usr/share/man/man1/medtls.1.gz\n" in listing
    # The units, byte for byte their one source (packaging/systemd/, also the roles' base).
    for unit in UNITS:
        path = re.search(rf"\./(usr/)?lib/systemd/system/{unit}\n", listing)
        assert path, f"{unit} is not in the package"
        packaged = subprocess.run(
            ["sh", "-c", f"dpkg-deb --fsys-tarfile {debs[0]} | tar -xO {path.group(0).strip()}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert packaged == (REPO / "packaging/systemd" / unit).read_text()
    for name, path in DATA.items():
        packaged = subprocess.run(
            ["sh", "-c", f"dpkg-deb --fsys-tarfile {debs[0]} | tar -xO {path}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert packaged == (REPO / "packaging/systemd" / name).read_text()
    # Tests, the test PKI and caches stay in the checkout.
    assert "testpki" not in listing and "/tests/" not in listing and ".pyc" not in listing
    script = subprocess.run(
        ["sh", "-c", f"dpkg-deb --fsys-tarfile {debs[0]} | tar -xO ./usr/bin/medtls"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert script.startswith("#!/usr/bin/python3 -I\n")


def test_install_upgrade_downgrade(debs, box):
    current, newer = debs
    version = source_version()
    for path, content in SITE_FILES.items():
        box.run(f"mkdir -p {os.path.dirname(path)} && printf '%s' '{content}' > {path}")
    site = {path: box.sha256(path) for path in SITE_FILES}

    box.apt_install(current)
    box.assert_installed(version)
    # The daemon's and the enrollment's imports work with Debian's python3 (enroll needs the
    # recommended ACME stack: it names the missing module instead of a traceback).
    box.run("medtls check --help >/dev/null && medtls run --help >/dev/null")

    box.apt_install(newer)
    box.assert_installed(version + "+test1")
    assert {path: box.sha256(path) for path in SITE_FILES} == site

    box.apt_install(current, "--allow-downgrades")
    box.assert_installed(version)
    assert {path: box.sha256(path) for path in SITE_FILES} == site


def test_debsums_sees_a_changed_file(debs, box):
    box.apt_install(debs[0])
    box.run("echo '# changed' >> /usr/lib/python3/dist-packages/medtls/cli.py")
    done = box.run("debsums -s medtls", check=False)
    assert done.returncode != 0
    assert "medtls/cli.py" in done.stdout + done.stderr


def test_units_installed_not_enabled_valid_and_drop_in_kept(debs, systemd_box):
    current, newer = debs
    box = systemd_box
    box.apt_install(current)
    for unit in UNITS:
        shown = box.run(f"systemctl cat {unit}").stdout
        assert re.search(rf"^# (/usr)?/lib/systemd/system/{unit}$", shown, re.M), shown
        # Installing never enables or starts anything: the box has no configuration yet.
        # (The enrollment and CRL fetch services have no [Install]: their timers start them.)
        enabled = "static" if unit in TIMER_STARTED else "disabled"
        assert box.run(f"systemctl is-enabled {unit}", check=False).stdout.strip() == enabled
        assert box.run(f"systemctl is-active {unit}", check=False).stdout.strip() == "inactive"
    # The package alone creates the daemon's user and group (sysusers.d): no role needed.
    user = box.run("getent passwd medtls").stdout.strip().split(":")
    assert user[5:] == ["/nonexistent", "/usr/sbin/nologin"], user
    group = box.run("id -gn medtls").stdout.strip()
    assert group == "medtls"
    # --man=no: Documentation=man:medtls(1) is in the package, but the box has no man-db.
    verify = box.run(f"systemd-analyze verify --man=no {' '.join(UNITS)}", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Started by hand without /etc/medtls/medtls.yaml: a failed unit, not a skipped one.
    start = box.run("systemctl start medtls.service", check=False)
    assert start.returncode != 0
    assert "Assertion failed" in start.stderr, start.stderr
    assert box.run("systemctl show -P AssertResult medtls.service").stdout.strip() == "no"

    # A drop-in (what the proxy role writes) layers on the packaged unit and survives upgrades.
    dropin = "/etc/systemd/system/medtls.service.d/medtls-role.conf"
    box.run(f"mkdir -p {os.path.dirname(dropin)}")
    box.run(f"printf '[Service]\\nLimitNOFILE=4096\\n' > {dropin}")
    box.run("systemctl daemon-reload")
    assert box.run("systemctl show -P LimitNOFILE medtls.service").stdout.strip() == "4096"
    before = box.sha256(dropin)
    box.apt_install(newer)
    assert box.sha256(dropin) == before
    assert box.run("systemctl show -P LimitNOFILE medtls.service").stdout.strip() == "4096"
    assert box.run("systemctl is-enabled medtls.service", check=False).stdout.strip() == "disabled"


def test_packaged_fail_closed_holds_when_the_ruleset_cannot_start(debs, systemd_box):
    """The packaged units alone: the interception unit pulls in the fail-closed table, reads the
    site's bridge and ports from /etc/default/medtls-interception, and when the ports never join
    the bridge it fails with the bridge's name and the bridge stays closed."""
    box = systemd_box
    box.apt_install(debs[0])
    box.run("mkdir -p /etc/medtls && echo 'mode: transparent' > /etc/medtls/medtls.yaml")
    box.run(
        "printf 'MEDTLS_BRIDGE=brsite\\nMEDTLS_DEVICE_PORT=dev0\\nMEDTLS_LAN_PORT=lan0\\n"
        "MEDTLS_BRIDGE_WAIT_SEC=1\\n' > /etc/default/medtls-interception"
    )
    start = box.run("systemctl start medtls-interception.service", check=False)
    assert start.returncode != 0
    journal = box.run("journalctl -u medtls-interception.service --no-pager -o cat").stdout
    assert "ports not enslaved to brsite" in journal, journal
    assert box.run("systemctl is-active medtls-failclosed.service").stdout.strip() == "active"
    table = box.run("nft list table bridge medtls_failclosed").stdout
    assert "policy drop" in table and "hook forward" in table, table
