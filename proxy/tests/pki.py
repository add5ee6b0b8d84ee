"""The tests' one PKI: root -> intermediate -> EC and RSA leaves, an expired one, a rogue CA;
`issue()` adds leaves of the root (tests that rotate, revoke or add identities of their own
use a fresh PKI: the `fresh_pki` fixture)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import medtls_testpki as testpki
from medtls_testpki import CA, EXPIRED, write_pem

ORG = "Test Hospital"
PASSPHRASE = b"s3cret-pass"
make_ca = partial(testpki.make_ca, org=ORG)
make_leaf = partial(testpki.make_leaf, org=ORG)

# name -> make_leaf options on top of LEAF; "rogue" is issued by the rogue CA, the rest by the
# intermediate.
LEAF = {"ips": ("127.0.0.1",), "days": 365}
LEAVES = {
    "box-a": {"dns": ("box-a.test",)},
    "box-b": {"key_type": "rsa", "dns": ("box-b.test",)},
    "pacs": {"key_type": "rsa", "dns": ("pacs.test",)},
    "his": {},
    "ris": {"dns": ("ris.test",)},
    "expired": EXPIRED,
}


class PKI:
    """Writes everything under `d`: NAME.crt (leaf + intermediate), NAME-leaf.crt, NAME.key."""

    def __init__(self, d: Path):
        self.dir = d
        root = CA(d, "Test Root CA", org=ORG, days=3650)
        inter = CA(d, "Test Intermediate CA", issuer=root, org=ORG, days=3650, cert_file=None)
        rogue = CA(d, "Rogue CA", org=ORG, days=3650, cert_file="rogue-ca.pem")
        self._root_ca = root
        self.root, self.inter, self.rogue = root.issuer, inter.issuer, rogue.issuer
        self.ca, self.rogue_ca = root.path, rogue.path
        self.ca_full = write_pem(d / "ca-full.pem", root.issuer.cert, inter.issuer.cert)
        for cn, options in LEAVES.items():
            inter.issue(cn, **{**LEAF, **options})
        rogue.issue("rogue", **LEAF)
        self.leaves = {**inter.leaves, **rogue.leaves}
        for cn, leaf in self.leaves.items():
            write_pem(d / f"{cn}-leaf.crt", leaf.cert)
        self.passphrase = d / "pass.txt"
        self.passphrase.write_bytes(PASSPHRASE + b"\n")
        self.passphrase.chmod(0o600)
        self.enc_key = write_pem(
            d / "box-a-enc.key", self.leaves["box-a"].key, passphrase=PASSPHRASE
        )

    def crl(
        self, path: Path, revoked: tuple[str, ...] = (), cas=("inter", "root"), days: float = 7
    ) -> Path:
        """A CRL file: one CRL per CA in `cas` ("inter", "root", "rogue"), each revoking the
        leaves named in `revoked` that it issued ("inter" itself: revoked by the root)."""
        crls = []
        for ca in cas:
            issuer = getattr(self, ca)
            certs = [self.leaves[n].cert for n in revoked if n in self.leaves]
            if ca == "root" and "inter" in revoked:
                certs.append(self.inter.cert)
            mine = [c for c in certs if c.issuer == issuer.cert.subject]
            crls.append(testpki.make_crl(issuer, mine, days=days))
        return write_pem(path, *crls)

    def issue(self, stem: str, cn: str | None = None, **options) -> tuple[Path, Path]:
        """A leaf of the root CA (subject CN only unless `org` is given): STEM.crt, STEM.key;
        pki.crl(..., cas=("root",)) revokes it by `stem`."""
        crt, key = self._root_ca.issue(stem, cn, **{"org": None, **options})
        self.leaves[stem] = self._root_ca.leaves[stem]
        return crt, key

    def crt(self, cn: str) -> Path:
        return self.dir / f"{cn}.crt"

    def key(self, cn: str) -> Path:
        return self.dir / f"{cn}.key"
