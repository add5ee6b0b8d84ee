"""atheris target: the readers of `rauc status`/`rauc info` JSON and of the update state file
(medtls.core.update) raise only their documented errors, and a state they accept is written and
read back unchanged."""

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from medtls.core import update as u


def TestOneInput(data: bytes) -> None:
    for parse, error in (
        (u.parse_rauc_status, u.RaucStatusError),
        (u.parse_bundle_info, u.RaucStatusError),
    ):
        with contextlib.suppress(error):
            parse(data)
    try:
        state = u.parse_state(data)
    except u.StateFileError:
        return
    assert u.parse_state(u.state_json(state).encode()) == state


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
