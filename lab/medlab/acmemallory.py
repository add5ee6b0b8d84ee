"""Mallory asks the lab's ACME CA for an account, without and with a wrong EAB key, and (as the
control) with the right one. Runs under Debian's /usr/bin/python3 (python3-acme).

Usage: python3 -m medlab.acmemallory DIRECTORY CA_FILE KID RIGHT_HMAC
Prints one line per attempt: `<attempt> ok` or `<attempt> refused <problem type> <detail>`.
"""

from __future__ import annotations

import base64
import secrets
import sys

import josepy
from acme import client, errors, messages
from cryptography.hazmat.primitives.asymmetric import ec


def attempt(directory: str, ca_file: str, eab: tuple[str, str] | None) -> str:
    key = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    net = client.ClientNetwork(key, alg=josepy.ES256, verify_ssl=ca_file, timeout=10)
    directory_obj = messages.Directory.from_json(net.get(directory).json())
    acme = client.ClientV2(directory_obj, net)
    binding = None
    if eab is not None:
        binding = messages.ExternalAccountBinding.from_data(
            account_public_key=key.public_key(), kid=eab[0], hmac_key=eab[1],
            directory=directory_obj,
        )  # fmt: skip
    reg = messages.NewRegistration.from_data(
        terms_of_service_agreed=True, external_account_binding=binding
    )
    try:
        acme.new_account(reg)
    except messages.Error as e:
        return f"refused {e.typ} {e.detail}"
    except errors.Error as e:
        return f"refused {type(e).__name__} {e}"
    return "ok"


def main() -> None:
    directory, ca_file, kid, right = sys.argv[1:5]
    wrong = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    for name, eab in (("no-eab", None), ("wrong-hmac", (kid, wrong)), ("right-eab", (kid, right))):
        print(f"{name} {attempt(directory, ca_file, eab)}", flush=True)


if __name__ == "__main__":
    main()
