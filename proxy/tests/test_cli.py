"""`medtls check`, `--version` and user errors: one line per problem, no tracebacks."""

import subprocess
from pathlib import Path

import pytest
from conftest import MEDTLS, box_config, write_yaml
from medtls import __version__, cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ct-modality.yaml"


def medtls(*args):
    return subprocess.run([*MEDTLS, *args], capture_output=True, text=True, timeout=30)


def ct_config(pki, tmp_path, **identity):
    text = EXAMPLE.read_text()
    text = text.replace("/etc/medtls/device.crt", str(pki.crt("box-a")))
    text = text.replace("/etc/medtls/device.key", str(pki.key("box-a")))
    text = text.replace("/etc/medtls/ca.pem", str(pki.ca))
    p = tmp_path / "ct.yaml"
    p.write_text(text)
    return p


def test_version():
    r = medtls("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"medtls {__version__}"


def test_check_ok_on_the_ct_example(pki, tmp_path):
    r = medtls("check", "--config", str(ct_config(pki, tmp_path)))
    assert r.returncode == 0, r.stderr
    assert "OK (2 outbound, 2 inbound)" in r.stdout


def test_check_example_as_shipped_names_missing_files():
    r = medtls("check", "--config", str(EXAMPLE))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "identity.certificate: file not found: /etc/medtls/device.crt",
        "identity.key: file not found: /etc/medtls/device.key",
        "trust.ca: file not found: /etc/medtls/ca.pem",
    ]


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        (
            {"certificate": "expired.crt"},
            "identity.certificate: {dir}/expired.crt: certificate expired on",
        ),
        ({"key": "box-b.key"}, "identity.key: does not match identity.certificate"),
        (
            {"certificate": "rogue.crt", "key": "rogue.key"},
            "identity.certificate: {dir}/rogue.crt: does not chain to trust.ca ({dir}/ca.pem"
            "; set identity.ca if another CA issued it): unable to get local issuer certificate",
        ),
        (
            {"key": "box-a-enc.key"},
            "identity.key: key is encrypted: set identity.key_passphrase_file",
        ),
        (
            {"certificate": "box-a-leaf.crt"},
            "identity.certificate: {dir}/box-a-leaf.crt: does not chain to trust.ca",
        ),
        ({"certificate": "pass.txt"}, "identity.certificate: no valid PEM certificate"),
    ],
)
def test_check_reports_material_problems(pki, tmp_path, identity, expected):
    cfg = box_config(pki, "box-a")
    cfg["identity"].update({k: str(pki.dir / v) for k, v in identity.items()})
    r = medtls("check", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert r.returncode == 1
    expected = expected.format(dir=pki.dir)
    assert any(line.startswith(expected) for line in r.stderr.splitlines()), r.stderr
    assert "Traceback" not in r.stderr


def test_check_passphrase_file(pki, tmp_path):
    cfg = box_config(pki, "box-a")
    cfg["identity"].update(key=str(pki.enc_key), key_passphrase_file=str(pki.passphrase))
    r = medtls("check", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert r.returncode == 0, r.stderr
    (tmp_path / "wrong").write_text("nope\n")
    cfg["identity"]["key_passphrase_file"] = str(tmp_path / "wrong")
    r = medtls("check", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert r.returncode == 1
    assert "identity.key_passphrase_file: wrong passphrase for identity.key" in r.stderr


def test_run_with_bad_config_is_one_line_per_problem(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("device: {ip: 1.2.3.4}\nidentity: {certificate: /x/c, key: /x/k}\ntrust: {}\n")
    r = medtls("run", "--config", str(p))
    assert r.returncode == 1
    assert sorted(r.stderr.splitlines()) == [
        "identity.certificate: file not found: /x/c",
        "identity.key: file not found: /x/k",
        "trust.ca: required key missing",
    ]


def test_run_port_in_use_is_a_clear_error(pki, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = box_config(
            pki,
            "box-a",
            inbound=[{"name": "svc", "listen": f"127.0.0.1:{port}", "allow": [{"cn": "box-b"}]}],
        )
        r = medtls("run", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (svc): Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ({"key": "box-a-enc.key"}, "error: identity.key: {d}/box-a-enc.key is encrypted: "
         "set identity.key_passphrase_file"),
        ({"key": "box-b.key"}, "error: identity.key: {d}/box-b.key does not match "
         "identity.certificate {d}/box-a.crt"),
    ],
)  # fmt: skip
def test_run_refuses_bad_material_with_one_line(pki, tmp_path, identity, expected):
    cfg = box_config(pki, "box-a", inbound=[{"name": "svc", "listen": "127.0.0.1:1",
                                             "allow": [{"cn": "box-b"}]}])  # fmt: skip
    cfg["identity"].update({k: str(pki.dir / v) for k, v in identity.items()})
    r = medtls("run", "--config", str(write_yaml(tmp_path / "c.yaml", cfg)))
    assert r.returncode == 1
    assert r.stderr.strip() == expected.format(d=pki.dir)


# --- lazy subcommands and the argparse-free `run` (docs/performance.md, items 41-42) ---


def _registered(module: str) -> set[str]:
    import argparse
    import importlib

    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register(sub)
    return set(sub.choices)


def test_subcommand_table_names_what_each_module_registers():
    by_module: dict[str, set[str]] = {}
    for name, module in cli.SUBCOMMANDS.items():
        by_module.setdefault(module, set()).add(name)
    assert by_module == {m: _registered(m) for m in by_module}


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "a.yaml"],
        ["run", "-c", "a.yaml"],
        ["run", "--config=a.yaml"],
        ["run", "--config", "a.yaml", "--log-level", "debug"],
        ["run", "--log-level=error", "-c", "dir/x y.yaml"],
        ["run", "--config", ""],
    ],
)
def test_plain_run_arguments_parse_as_argparse_parses_them(argv):
    fast = cli.fast_run_args(argv)
    assert fast is not None and "argparse" not in type(fast).__module__
    assert vars(fast) == vars(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "--help"],
        ["run", "-h"],
        ["run", "--conf", "a.yaml"],  # abbreviation: argparse's business
        ["run", "-ca.yaml"],
        ["run", "--config", "a.yaml", "--config", "b.yaml"],
        ["run", "--config", "-a.yaml"],
        ["run", "--config", "a.yaml", "--log-level", "verbose"],
        ["run", "--config", "a.yaml", "--extra"],
        ["run", "--log-level", "info"],
        ["run", "--", "a.yaml"],
        ["check", "--config", "a.yaml"],
        ["--version"],
    ],
)
def test_anything_else_goes_through_argparse(argv):
    assert cli.fast_run_args(argv) is None


def test_run_errors_come_from_argparse(tmp_path):
    r = medtls("run", "--config", "a.yaml", "--log-level", "verbose")
    assert r.returncode == 2 and "invalid choice: 'verbose'" in r.stderr
    r = medtls("run", "--conf", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and r.stderr.strip().endswith("configuration file not found")


def test_help_lists_every_subcommand_also_before_a_command():
    for args in (("--help",), ("-h", "run")):
        r = medtls(*args)
        assert r.returncode == 0
        assert set(cli.SUBCOMMANDS) <= set(r.stdout.split())


SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-cryptography 38: as on a box


@pytest.mark.skipif(not Path(SYSTEM_PYTHON).exists(), reason="needs Debian's /usr/bin/python3")
def test_check_under_debians_python(pki, tmp_path):
    """`medtls check` on the box runs under /usr/bin/python3, whose cryptography (38) lacks
    load_pem_x509_certificates and the *_utc attributes: a valid configuration (chain with an
    intermediate, CRLs) is OK, an expired identity is one line; never a traceback."""
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"}
    text = ct_config(pki, tmp_path).read_text()
    crl = pki.crl(tmp_path / "crl.pem", days=0.5)  # due within a day: the warning path too
    text = text.replace("  # crl: /etc/medtls/crl.pem", f"  crl: {crl}")
    good = tmp_path / "good.yaml"
    good.write_text(text)
    r = subprocess.run([SYSTEM_PYTHON, "-m", "medtls", "check", "--config", str(good)],
                       capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK (2 outbound, 2 inbound)" in r.stdout
    assert "is due for renewal in" in r.stdout + r.stderr
    expired = tmp_path / "expired.yaml"
    expired.write_text(text.replace(str(pki.crt("box-a")), str(pki.crt("expired"))))
    r = subprocess.run([SYSTEM_PYTHON, "-m", "medtls", "check", "--config", str(expired)],
                       capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "certificate expired on" in r.stderr
