"""ACME enrollment and CRL fetching: runs in its own process (``medtls enroll``, ``medtls
crl-fetch``, under Debian's /usr/bin/python3), never in the serving daemon, which stays lean
(no cryptography, acme, josepy or requests). May import config, core, tls and interception."""
