"""Signed RAUC bundles and their keys, on the host in seconds (docs/updates.md "Bundles and keys").

The box's checks are RAUC's own, run here with Debian's `rauc` against a keyring section like the
box's system.conf (`check-purpose=codesign`): a bundle is accepted only when it is signed under the
keyring's CA, with a signing certificate for code signing that is valid now, and only as long as
its payload is the one that was signed.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "image/scripts"
BUILD_ID = "20250101120000"


@pytest.fixture(autouse=True, scope="module")
def _host_tools():
    missing = [tool for tool in ("rauc", "mksquashfs", "debugfs") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: install setup/apt/image.list (make setup-apt)")


def run(*args, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MEDTLS_RAUC", "MEDTLS_BUNDLE"))
    }
    full_env.update(env or {})
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=full_env, timeout=120, **kw
    )


def box_conf(directory: Path, keyring: Path, check_purpose: str | None = "codesign") -> Path:
    """A system.conf with the box's [keyring] checks (info reads no other setting of it)."""
    conf = directory / f"system-{keyring.stem}-{check_purpose}.conf"
    lines = [
        "[system]",
        "compatible=medtls-amd64",
        "bootloader=noop",
        "",
        "[keyring]",
        f"path={keyring}",
    ]
    if check_purpose:
        lines.append(f"check-purpose={check_purpose}")
    conf.write_text("\n".join(lines) + "\n")
    return conf


def rauc_info(bundle: Path, keyring: Path, *extra: str, check_purpose: str | None = "codesign"):
    """What `rauc info` says about BUNDLE when the box trusts KEYRING."""
    conf = box_conf(bundle.parent, keyring, check_purpose)
    return run("rauc", f"--conf={conf}", f"--keyring={keyring}", "info", *extra, bundle)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rauc-pki")
    result = run(SCRIPTS / "rauc-test-pki.sh", out)
    assert result.returncode == 0, result.stderr
    return out


def tiny_rootfs(work: Path, keyring: bytes | None) -> Path:
    """A tiny root filesystem image whose dpkg status names its architecture and medtls version,
    trusting KEYRING after an update (/etc/rauc/keyring.pem)."""
    tree = work / "tree"
    (tree / "var/lib/dpkg").mkdir(parents=True)
    (tree / "var/lib/dpkg/status").write_text(
        "Package: dpkg\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.22.21\n\n"
        "Package: medtls\nStatus: install ok installed\nArchitecture: all\nVersion: 0.1.0\n"
        # A real status file is megabytes long: make-bundle.sh must read past its fields.
        + "".join(
            f"\nPackage: filler{i}\nStatus: install ok installed\nArchitecture: all\n"
            f"Version: 1.0\nDescription: {'x' * 200}\n"
            for i in range(2000)
        )
    )
    # Incompressible content: RAUC refuses a verity bundle whose squashfs is a single block.
    (tree / "etc").mkdir()
    (tree / "etc/noise").write_bytes(os.urandom(65536))
    if keyring is not None:
        (tree / "etc/rauc").mkdir()
        (tree / "etc/rauc/keyring.pem").write_bytes(keyring)
    image = work / "rootfs.ext4"
    with image.open("wb") as f:
        f.truncate(8 << 20)
    result = run("mkfs.ext4", "-q", "-F", "-L", "RASPIROOT", "-d", tree, image)
    assert result.returncode == 0, result.stderr
    return image


@pytest.fixture(scope="module")
def rootfs_ext4(pki, tmp_path_factory) -> Path:
    """Its keyring trusts both test CAs, so either signer may sign it."""
    keyring = (pki / "ca.pem").read_bytes() + (pki / "foreign-ca.pem").read_bytes()
    return tiny_rootfs(tmp_path_factory.mktemp("rootfs"), keyring)


def make_bundle(rootfs: Path, out: Path, pki: Path, **env: str) -> subprocess.CompletedProcess:
    return run(
        SCRIPTS / "make-bundle.sh",
        rootfs,
        out,
        env={"MEDTLS_RAUC_PKI_DIR": str(pki), "MEDTLS_BUILD_ID": BUILD_ID, **env},
    )


@pytest.fixture(scope="module")
def bundle(pki, rootfs_ext4, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("bundle")
    result = make_bundle(rootfs_ext4, Path(f"{out_dir}/"), pki)
    assert result.returncode == 0, result.stderr
    path = out_dir / f"medtls-amd64-0.1.0+{BUILD_ID}.raucb"
    assert path.is_file(), result.stdout
    assert "THROWAWAY TEST key" in result.stdout
    return path


def sign_with(pki: Path, rootfs: Path, out: Path, prefix: str, keyring: str | None = None):
    return make_bundle(
        rootfs,
        out,
        pki,
        MEDTLS_RAUC_CERT=str(pki / f"{prefix}signing.pem"),
        MEDTLS_RAUC_KEY=str(pki / f"{prefix}signing.key"),
        MEDTLS_RAUC_KEYRING=str(pki / (keyring or f"{prefix}ca.pem")),
    )


def issue_signing_cert(
    pki: Path, out: Path, not_before: datetime.datetime, not_after: datetime.datetime
) -> Path:
    """A signing certificate under the test CA valid in the given period; its key goes beside it."""
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "medtls test signer (dated)")])
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (out / "dated.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "dated.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return out / "dated.pem"


# --- the test PKI ---------------------------------------------------------------------------------


def test_test_pki_is_made_once_and_kept(pki):
    before = {p.name: p.read_bytes() for p in pki.iterdir()}
    assert set(before) >= {
        "ca.pem",
        "signing.pem",
        "signing.key",
        "foreign-ca.pem",
        "foreign-signing.pem",
    }
    result = run(SCRIPTS / "rauc-test-pki.sh", pki)
    assert result.returncode == 0, result.stderr
    assert "keeping" in result.stdout
    assert {p.name: p.read_bytes() for p in pki.iterdir()} == before
    assert oct((pki / "signing.key").stat().st_mode & 0o777) == "0o600"


def test_signing_certificate_is_for_code_signing_only(pki):
    cert = x509.load_pem_x509_certificate((pki / "signing.pem").read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical and list(eku.value) == [ExtendedKeyUsageOID.CODE_SIGNING]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    # The foreign pair is unrelated: its signer does not chain to the test CA.
    assert (
        run("openssl", "verify", "-CAfile", pki / "ca.pem", pki / "foreign-signing.pem").returncode
        != 0
    )


# --- accepted and refused bundles -----------------------------------------------------------------


def test_bundle_is_accepted_under_its_keyring_and_names_compatible_version_verity(bundle, pki):
    result = rauc_info(bundle, pki / "ca.pem")
    assert result.returncode == 0, result.stderr
    assert "Verified inline signature by 'O = medtls TEST ONLY" in result.stderr
    assert "Compatible: \t'medtls-amd64'" in result.stdout
    assert f"Version:    \t'0.1.0+{BUILD_ID}'" in result.stdout
    assert "Bundle Format: \tverity" in result.stdout
    info = json.loads(rauc_info(bundle, pki / "ca.pem", "--output-format=json").stdout)
    assert [list(image) for image in info["images"]] == [["rootfs"]]
    assert info["images"][0]["rootfs"]["filename"] == "rootfs.ext4"


def test_bundle_signed_by_a_foreign_key_is_refused(pki, rootfs_ext4, tmp_path):
    foreign = tmp_path / "foreign.raucb"
    made = sign_with(pki, rootfs_ext4, foreign, "foreign-")
    assert made.returncode == 0, made.stderr
    # A valid bundle, for its own CA.
    assert rauc_info(foreign, pki / "foreign-ca.pem").returncode == 0

    result = rauc_info(foreign, pki / "ca.pem")
    assert result.returncode != 0
    assert "signature verification failed" in result.stderr
    assert "unable to get local issuer certificate" in result.stderr


def test_make_bundle_refuses_a_key_the_keyring_does_not_trust(pki, rootfs_ext4, tmp_path):
    out = tmp_path / "mismatch.raucb"
    result = sign_with(pki, rootfs_ext4, out, "foreign-", keyring="ca.pem")
    assert result.returncode == 2
    assert "unable to get local issuer certificate" in result.stderr
    assert f"signing {out} failed" in result.stderr and "keyring" in result.stderr
    assert not out.exists()


def test_signing_certificate_needs_the_code_signing_purpose_check(bundle, pki):
    """Without `check-purpose=codesign` OpenSSL's default (S/MIME signing) refuses the signer:
    the box's system.conf must carry the same [keyring] check-purpose as make-bundle.sh."""
    result = rauc_info(bundle, pki / "ca.pem", check_purpose=None)
    assert result.returncode != 0
    assert "unsuitable certificate purpose" in result.stderr


def flip_byte(source: Path, target: Path, offset: int) -> None:
    data = bytearray(source.read_bytes())
    data[offset] ^= 0xFF
    target.write_bytes(bytes(data))


def test_payload_modified_after_signing_is_refused(bundle, pki, tmp_path):
    """The signed manifest holds the verity root hash: RAUC checks the payload against it before it
    uses any of it (`rauc extract` here; dm-verity while `rauc install` reads it on the box)."""
    good = run(
        "rauc", f"--conf={box_conf(tmp_path, pki / 'ca.pem')}", "extract", bundle, tmp_path / "good"
    )
    assert good.returncode == 0, good.stderr
    assert (tmp_path / "good/rootfs.ext4").stat().st_size == 8 << 20

    tampered = tmp_path / "tampered.raucb"
    flip_byte(bundle, tampered, 2048)
    conf = box_conf(tmp_path, pki / "ca.pem")
    result = run("rauc", f"--conf={conf}", "extract", tampered, tmp_path / "out")
    assert result.returncode != 0
    assert "bundle payload is corrupted" in result.stderr
    assert not (tmp_path / "out/rootfs.ext4").exists()


def test_signature_modified_after_signing_is_refused(bundle, pki, tmp_path):
    # The CMS signature (with the manifest inside) sits before the trailing 8-byte size field.
    tampered = tmp_path / "tampered-signature.raucb"
    flip_byte(bundle, tampered, bundle.stat().st_size - 8 - 200)
    result = rauc_info(tampered, pki / "ca.pem")
    assert result.returncode != 0
    assert "signature" in result.stderr.lower()


@pytest.mark.parametrize(
    ("case", "days_from_now", "refusal"),
    [
        ("expired", (-400, -1), "certificate has expired"),
        ("not yet valid", (1, 400), "certificate is not yet valid"),
    ],
)
def test_signing_certificate_must_be_valid_at_install_time(
    pki, rootfs_ext4, tmp_path, case, days_from_now, refusal
):
    """RAUC checks the signer's validity against the box's clock at install time (not the signing
    time): an expired signer is refused, so is one whose start lies ahead of a box's clock."""
    now = datetime.datetime.now(datetime.UTC)
    cert = issue_signing_cert(
        pki, tmp_path, *(now + datetime.timedelta(days=d) for d in days_from_now)
    )
    signer = {"MEDTLS_RAUC_CERT": str(cert), "MEDTLS_RAUC_KEY": str(tmp_path / "dated.key")}
    made = make_bundle(
        rootfs_ext4, tmp_path / "m.raucb", pki, MEDTLS_RAUC_KEYRING=str(pki / "ca.pem"), **signer
    )
    assert made.returncode == 2, case
    assert refusal in made.stderr

    # Signed anyway (rauc without a keyring check), the box refuses it.
    dated = tmp_path / "dated.raucb"
    content = tmp_path / "content"
    content.mkdir()
    os.link(rootfs_ext4, content / "rootfs.ext4")
    (content / "manifest.raucm").write_text(
        "[update]\ncompatible=medtls-amd64\nversion=1\n\n[bundle]\nformat=verity\n\n"
        "[image.rootfs]\nfilename=rootfs.ext4\n"
    )
    signed = run(
        "rauc", "bundle", f"--cert={cert}", f"--key={tmp_path / 'dated.key'}", content, dated
    )
    assert signed.returncode == 0, signed.stderr
    result = rauc_info(dated, pki / "ca.pem")
    assert result.returncode != 0
    assert refusal in result.stderr
    # Only the dates are wrong.
    assert rauc_info(dated, pki / "ca.pem", "--no-check-time").returncode == 0


# --- make-bundle.sh with bad input ----------------------------------------------------------------


def test_missing_rootfs_is_named(pki, tmp_path):
    result = make_bundle(tmp_path / "nope.ext4", tmp_path / "b.raucb", pki)
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.ext4'}: no such file" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "b.raucb").exists()


def test_rootfs_that_is_not_ext4_is_named(bundle, pki, tmp_path):
    text = tmp_path / "rootfs.txt"
    text.write_text("not a filesystem\n" * 1000)
    for wrong, found in ((text, "no filesystem"), (bundle, "squashfs")):
        result = make_bundle(wrong, tmp_path / "b.raucb", pki)
        assert result.returncode == 2
        assert f"{wrong}: not an ext4 filesystem image (found: {found})" in result.stderr
    assert not (tmp_path / "b.raucb").exists()


def test_missing_or_partial_signing_material_is_named(pki, rootfs_ext4, tmp_path):
    out = tmp_path / "b.raucb"
    cert, key, ring = str(pki / "signing.pem"), str(pki / "signing.key"), str(pki / "ca.pem")
    cases = [
        (
            {
                "MEDTLS_RAUC_CERT": cert,
                "MEDTLS_RAUC_KEY": str(tmp_path / "gone.key"),
                "MEDTLS_RAUC_KEYRING": ring,
            },
            f"signing key (MEDTLS_RAUC_KEY) {tmp_path / 'gone.key'}: no such readable file",
        ),
        (
            {"MEDTLS_RAUC_CERT": cert, "MEDTLS_RAUC_KEYRING": ring},
            "MEDTLS_RAUC_CERT is set but MEDTLS_RAUC_KEY is not",
        ),
        ({"MEDTLS_RAUC_CERT": cert, "MEDTLS_RAUC_KEY": key}, "MEDTLS_RAUC_KEYRING is not set"),
        (
            {
                "MEDTLS_RAUC_CERT": cert,
                "MEDTLS_RAUC_KEY": key,
                "MEDTLS_RAUC_KEYRING": str(tmp_path / "none.pem"),
            },
            f"keyring (MEDTLS_RAUC_KEYRING) {tmp_path / 'none.pem'}: no such readable file",
        ),
        ({"MEDTLS_BUNDLE_VERSION": "1.0\ncompatible=other"}, "only letters, digits"),
    ]
    for env, message in cases:
        result = make_bundle(rootfs_ext4, out, pki, **env)
        assert result.returncode == 2, env
        assert message in result.stderr, (env, result.stderr)
        assert not out.exists()


# --- the keyring in the image ---------------------------------------------------------------------


def test_image_keyring_defaults_to_the_test_ca_and_says_so(pki, tmp_path):
    result = run(
        SCRIPTS / "install-rauc-keyring.sh", tmp_path, env={"MEDTLS_RAUC_PKI_DIR": str(pki)}
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING: this image trusts the TEST RAUC keyring" in result.stdout
    assert (tmp_path / "etc/rauc/keyring.pem").read_bytes() == (pki / "ca.pem").read_bytes()


def test_image_keyring_from_the_build_variable(pki, tmp_path):
    rollover = tmp_path / "old-and-new.pem"
    rollover.write_bytes((pki / "ca.pem").read_bytes() + (pki / "foreign-ca.pem").read_bytes())
    result = run(
        SCRIPTS / "install-rauc-keyring.sh",
        tmp_path / "root",
        env={"MEDTLS_RAUC_KEYRING": str(rollover)},
    )
    assert result.returncode == 0, result.stderr
    assert "TEST RAUC keyring" not in result.stdout
    assert (
        "medtls TEST ONLY RAUC test CA" in result.stdout
        and "foreign TEST ONLY RAUC test CA" in result.stdout
    )
    assert (tmp_path / "root/etc/rauc/keyring.pem").read_bytes() == rollover.read_bytes()


def test_image_keyring_with_a_private_key_or_no_certificate_is_refused(pki, tmp_path):
    leaky = tmp_path / "leaky.pem"
    leaky.write_bytes((pki / "ca.pem").read_bytes() + (pki / "ca.key").read_bytes())
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificate here\n")
    for keyring, message in ((leaky, "holds a private key"), (empty, "no PEM certificate in it")):
        result = run(
            SCRIPTS / "install-rauc-keyring.sh",
            tmp_path / "root",
            env={"MEDTLS_RAUC_KEYRING": str(keyring)},
        )
        assert result.returncode == 2
        assert (
            f"keyring {keyring} (MEDTLS_RAUC_KEYRING)" in result.stderr and message in result.stderr
        )
        assert not (tmp_path / "root/etc/rauc/keyring.pem").exists()


# --- docs/updates.md's worked example: offline signing, resign, rollover ------------------------


def test_offline_signing_example_resigns_and_rolls_over(bundle, pki, tmp_path):
    work = tmp_path / "signing-machine"
    result = run(REPO / "examples/rauc-offline-signing.sh", bundle, pki / "ca.pem", work)
    assert result.returncode == 0, result.stderr
    bundles = {
        "dev": bundle,
        "release": work / "release.raucb",
        "next": work / "release-next.raucb",
    }
    keyrings = {
        "test CA": pki / "ca.pem",
        "prod CA": work / "prod/ca.pem",
        "next CA": work / "next/ca.pem",
        "prod+next": work / "rollover-keyring.pem",
    }
    accepted = {
        (name, ring): rauc_info(path, keyrings[ring]).returncode == 0
        for name, path in bundles.items()
        for ring in keyrings
    }
    assert accepted == {
        # The build's (test-signed) bundle installs only where the test CA is trusted.
        ("dev", "test CA"): True,
        ("dev", "prod CA"): False,
        ("dev", "next CA"): False,
        ("dev", "prod+next"): False,
        # Re-signed on the signing machine: production boxes take it, test boxes do not.
        ("release", "test CA"): False,
        ("release", "prod CA"): True,
        ("release", "next CA"): False,
        ("release", "prod+next"): True,
        # Signed under the next CA: only boxes whose keyring already holds it.
        ("next", "test CA"): False,
        ("next", "prod CA"): False,
        ("next", "next CA"): True,
        ("next", "prod+next"): True,
    }
    # Re-signing keeps the payload: the same root filesystem image (checksum) in all three.
    checksums = {
        json.loads(
            rauc_info(
                path, keyrings["prod+next" if name != "dev" else "test CA"], "--output-format=json"
            ).stdout
        )["images"][0]["rootfs"]["checksum"]
        for name, path in bundles.items()
    }
    assert len(checksums) == 1


def test_production_signer_must_stay_trusted_by_the_payload(pki, tmp_path):
    """A payload whose keyring lacks the signer's CA would leave the updated box unable to take the
    next bundle from that signer: make-bundle.sh refuses to sign it with a production key."""
    only_test_ca = tiny_rootfs(tmp_path / "test-ca-only", (pki / "ca.pem").read_bytes())
    out = tmp_path / "b.raucb"
    result = sign_with(pki, only_test_ca, out, "foreign-")
    assert result.returncode == 2
    assert "/etc/rauc/keyring.pem does not trust the signing certificate" in result.stderr
    assert not out.exists()

    no_keyring = tiny_rootfs(tmp_path / "no-keyring", None)
    result = sign_with(pki, no_keyring, out, "foreign-")
    assert result.returncode == 2
    assert "has no /etc/rauc/keyring.pem" in result.stderr


def test_test_signed_build_of_a_production_image_is_checked_against_the_test_ca(pki, tmp_path):
    """The offline flow: the image trusts production (here: the foreign CA), the build signs with
    the test key, and the bundle is re-signed later on the signing machine."""
    production_image = tiny_rootfs(tmp_path / "prod", (pki / "foreign-ca.pem").read_bytes())
    out = tmp_path / "b.raucb"
    result = make_bundle(
        production_image, out, pki, MEDTLS_RAUC_KEYRING=str(pki / "foreign-ca.pem")
    )
    assert result.returncode == 0, result.stderr
    assert "re-sign this bundle" in result.stdout
    assert rauc_info(out, pki / "ca.pem").returncode == 0
