"""The certificates role (generate mode): key made on the box, private, with a matching CSR."""

import os


def test_key_generated_private(host):
    key = host.file("/etc/medtls/device.key")
    assert key.is_file
    assert key.user == "medtls"
    assert key.group == "medtls"
    assert key.mode == 0o600
    assert "prime256v1" in host.check_output("openssl pkey -in /etc/medtls/device.key -noout -text")


def test_directory_closed(host):
    d = host.file("/etc/medtls")
    assert d.user == "root"
    assert d.group == "medtls"
    assert d.mode == 0o750


def test_ca_bundle_installed(host):
    ca = host.file("/etc/medtls/ca.pem")
    assert ca.mode == 0o644
    assert "medtls test CA" in host.check_output(
        "openssl x509 -in /etc/medtls/ca.pem -noout -subject"
    )


def test_crl_installed(host):
    crl = host.file("/etc/medtls/crl.pem")
    assert crl.mode == 0o644 and crl.group == "medtls"
    text = host.check_output("openssl crl -in /etc/medtls/crl.pem -noout -text")
    assert "Issuer: CN=medtls test CA" in text.replace(" = ", "=")
    assert "Revoked Certificates:" in text


def test_csr_matches_key(host):
    csr = host.file("/etc/medtls/device.csr")
    assert csr.is_file
    host.run_expect([0], "openssl req -in /etc/medtls/device.csr -noout -verify")
    csr_pub = host.check_output("openssl req -in /etc/medtls/device.csr -noout -pubkey")
    key_pub = host.check_output("openssl pkey -in /etc/medtls/device.key -pubout")
    assert csr_pub == key_pub
    text = host.check_output("openssl req -in /etc/medtls/device.csr -noout -text")
    assert "CN=ct1.hospital.example" in text.replace(" = ", "=")
    assert "IP Address:198.18.0.10" in text


def test_csr_fetched_for_the_ca(host):
    fetched = os.path.join(
        os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "csr", host.backend.host + ".csr"
    )
    assert os.path.exists(fetched)


def test_no_certificate_yet(host):
    assert not host.file("/etc/medtls/device.crt").exists
