"""TLS session resumption: which session an outbound connection offers, which one is kept.

Servers (inbound ports) issue one stateless ticket per full handshake (`tlsctx.configure_tickets`;
none when the ClientHello already offers one, `openssl.issue_no_ticket`);
their ticket keys are replaced every `tls.session_lifetime` seconds and on every reload (a reload
builds new contexts). Clients (outbound routes) keep the newest ticket-carrying session per route
of the running configuration generation and offer it while it is younger than the lifetime.
Every handshake, resumed or not, goes through the same identity and ACL checks afterwards; a
resumed one additionally checks that the peer certificate has not expired since.
"""

from __future__ import annotations

import ssl

from medtls.tls.material import Generation


def offer(rt: Generation, route: str, now: float) -> ssl.SSLSession | None:
    """The session to offer on a new connection of `route`, if one is still fresh."""
    kept = rt.sessions.get(route)
    if kept is None:
        return None
    session, stored = kept
    if now - stored >= rt.config.session_lifetime:
        del rt.sessions[route]
        return None
    return session


def keep(rt: Generation, route: str, tls: ssl.SSLObject, now: float, resumed: bool) -> None:
    """After a full handshake, remember its session if the server gave it a ticket (TLS 1.3:
    after the handshake, so call this once data has been read), or forget the one that was
    refused. A resumed connection keeps the ticket it used until the lifetime ends: medtls
    servers do not renew tickets (`openssl.issue_no_ticket`), and reading `SSLObject.session`
    costs ≈ 0.2 ms (CPython copies the session through DER)."""
    if not rt.config.session_lifetime or resumed:
        return
    session = tls.session
    if session is not None and session.has_ticket:
        rt.sessions[route] = (session, now)
    else:
        rt.sessions.pop(route, None)


def expired_peer(tls: ssl.SSLObject, wall_now: float) -> str | None:
    """For a resumed handshake: why the (earlier verified) peer certificate is no longer valid."""
    cert = tls.getpeercert()
    not_after = cert.get("notAfter") if cert else None
    if not_after and ssl.cert_time_to_seconds(not_after) < wall_now:
        return f"peer certificate expired on {not_after} (resumed session refused)"
    return None
