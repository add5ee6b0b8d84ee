"""A throwaway lab PKI: one CA and the node certificates the lab and Mallory use."""

from __future__ import annotations

from pathlib import Path

from medtls_testpki import CA, HOUR, make_leaf, save

# name -> (CN, IP SAN); all issued by the lab CA unless listed in SELF_SIGNED.
NODES = {
    "device": ("ct-modality", "198.18.0.10"),
    "pacs": ("pacs", "198.18.0.20"),
    "his": ("his", "198.18.0.30"),
    "dc-pacs": ("dc-pacs", "198.18.5.20"),  # the PACS behind the router (data centre)
    "mallory": ("mallory", "198.18.0.66"),
    "mallory-selfsigned": ("pacs", "198.18.0.20"),
}
SELF_SIGNED = {"mallory-selfsigned"}
ORG = "medtls lab"
WEEK = {"days": 7, "not_before_days": -HOUR}


def make_pki(out: Path) -> Path:
    """Writes ca.crt, ca.key and NAME.crt/NAME.key for every node into `out`."""
    ca = CA(out, "medtls lab CA", org=ORG, cert_file="ca.crt", key_file="ca.key", **WEEK)
    for name, (cn, ip) in NODES.items():
        if name in SELF_SIGNED:
            save(make_leaf(cn, None, org=ORG, ips=(ip,), **WEEK), out, name)
        else:
            ca.issue(name, cn, ips=(ip,), **WEEK)
    return out


def issue(
    pki: Path, stem: str, cn: str, ips=(), out: Path | None = None, **options
) -> tuple[Path, Path]:
    """A further leaf of the lab CA in `pki` (after make_pki): STEM.crt/STEM.key in `out`
    (default `pki`); `options` as make_leaf's (days, not_before_days, eku, ...), default the
    lab's week."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from medtls_testpki import Issued

    ca = Issued(
        x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes()),
        load_pem_private_key((pki / "ca.key").read_bytes(), None),
    )
    return save(make_leaf(cn, ca, org=ORG, ips=ips, **{**WEEK, **options}), out or pki, stem)
