"""systemd credentials (LoadCredential=/SetCredentialEncrypted=) for key passphrases."""

from __future__ import annotations

import os


class CredentialError(Exception):
    pass


def credential_path(name: str, env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise CredentialError(
            f"credential {name!r}: $CREDENTIALS_DIRECTORY is not set "
            "(add LoadCredential= to the unit)"
        )
    if not name or "/" in name or name in (".", ".."):
        raise CredentialError(f"credential {name!r}: invalid credential name")
    return os.path.join(directory, name)


def read_credential(name: str, env: dict[str, str] | None = None) -> bytes:
    """Contents of credential `name`, one trailing newline stripped."""
    path = credential_path(name, env)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CredentialError(f"credential {name!r}: cannot read {path}: {exc.strerror}") from None
    return data[:-1] if data.endswith(b"\n") else data


def read_passphrase(spec: str, env: dict[str, str] | None = None) -> bytes:
    """`credential:NAME` reads a systemd credential, anything else is a file path."""
    if spec.startswith("credential:"):
        return read_credential(spec.removeprefix("credential:"), env)
    env = dict(os.environ) if env is None else env
    directory = env.get("CREDENTIALS_DIRECTORY")
    path = spec
    if directory and not os.path.isabs(spec):
        path = os.path.join(directory, spec)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise CredentialError(f"passphrase file {path}: {exc.strerror}") from None
    return data[:-1] if data.endswith(b"\n") else data
