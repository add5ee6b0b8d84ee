"""Fuzz the enrollment state file reader (`core.enrollment.parse_state`: state.json is read by
`medtls status` and metrics in the serving process and by the enroll process).

Promised: an EnrollmentState or StateFileError with a message; an accepted state written back
(`state_json`) reads back equal.
"""

import sys

import atheris

with atheris.instrument_imports():
    from medtls.core.enrollment import StateFileError, parse_state, state_json


def TestOneInput(data: bytes) -> None:
    try:
        state = parse_state(data)
    except StateFileError as e:
        if not str(e):
            raise AssertionError("a refusal must say why") from None
        return
    if parse_state(state_json(state).encode()) != state:
        raise AssertionError("a state written back reads back differently")


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
