"""Profiles as data and their effect on real SSL contexts (no sockets)."""

import ssl

import pytest
from medtls.config.profiles import LEGACY_PROFILES, PROFILES
from medtls.tls.context import apply_profile, set_tls13_suites


def names(profile, proto=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    apply_profile(ctx, PROFILES[profile])
    return ctx, [c["name"] for c in ctx.get_ciphers() if proto is None or c["protocol"] == proto]


def test_default_profile_b12():
    ctx, tls13 = names("bcp195", "TLSv1.3")
    assert tls13 == [
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_GCM_SHA256",
    ]
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    _, all_ = names("bcp195")
    assert not [n for n in all_ if "CBC" in n or n.endswith("-SHA") or "CCM" in n]


def test_modified_profile_b13_exact_tls13_suites():
    _, tls13 = names("bcp195-modified", "TLSv1.3")
    assert tls13 == [
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    ]


def test_modified_profile_b13_tls12_suites():
    ctx, _ = names("bcp195-modified")
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert {
        "ECDHE-ECDSA-AES128-CCM",
        "ECDHE-ECDSA-AES256-CCM8",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-CCM",
    } <= tls12
    for c in ctx.get_ciphers():
        assert c["aead"], c["name"]  # no CBC, no SHA-1 MAC
        assert c["kea"] != "kx-rsa", c["name"]  # no static RSA key exchange


def test_legacy_profiles_are_opt_in_and_marked():
    assert {"non-downgrading", "aes-legacy"} == LEGACY_PROFILES
    ctx, _tls12 = names("aes-legacy", "TLSv1.2")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1
    assert ctx.maximum_version == ssl.TLSVersion.TLSv1_2
    _, nd = names("non-downgrading", "TLSv1.2")
    assert sorted(nd) == sorted(
        [
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "DHE-RSA-AES128-GCM-SHA256",
            "DHE-RSA-AES256-GCM-SHA384",
        ]
    )


def test_no_profile_below_tls12_except_aes_legacy():
    for name, p in PROFILES.items():
        if name != "aes-legacy":
            assert p.min_version == "TLSv1_2"


def test_set_tls13_suites_rejects_garbage():
    from medtls.tls.context import TLSSetupError

    with pytest.raises(TLSSetupError):
        set_tls13_suites(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ["TLS_NOPE"])
