"""Runs one ACME order under /usr/bin/python3 (as the box does) for the enrollment tests:
argv[1] is a JSON object of obtain()'s settings; prints {"chain": PEM} or {"error": line}."""

import json
import sys

from medtls.enroll import acme, challenges


def main() -> int:
    a = json.loads(sys.argv[1])
    eab = tuple(a["eab"]) if a.get("eab") else None
    responder = challenges.ChallengeResponder(
        ("127.0.0.1", a["tls_port"]) if a.get("tls_port") else None,
        ("127.0.0.1", a["http_port"]) if a.get("http_port") else None,
    )
    try:
        with responder:
            chain = acme.obtain(
                a["directory"], a["ca_file"], eab, a["account_key"],
                a["csr"].encode(), a["challenges"], responder, None, (), a.get("timeout", 60),
            )  # fmt: skip
    except (acme.AcmeError, challenges.ResponderError) as e:
        print(json.dumps({"error": str(e), "answered": responder.answered}))
        return 1
    print(json.dumps({"chain": chain.decode(), "answered": responder.answered}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
