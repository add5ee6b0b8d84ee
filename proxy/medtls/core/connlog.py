"""One key=value line per connection, for journald/syslog and grep."""

from __future__ import annotations

import datetime as dt
import re

from medtls.core.trail import FIELDS

_NEEDS_QUOTES = re.compile(r'[\s"=\\]')


def kv_value(value) -> str:
    if value is None:
        return "-"
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def kv_line(fields: dict) -> str:
    return " ".join(f"{key}={kv_value(value)}" for key, value in fields.items())


def addr(pair) -> str:
    if not pair:
        return "-"
    host, port = pair[0], pair[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def connection_line(
    conn,
    device_port,
    peer: str,
    tls_version: str,
    cipher: str,
    bytes_from_client: int,
    bytes_from_server: int,
    duration: float,
    result: str,
    detail: str = "",
    resumed: bool = False,
    upstream=None,
    not_delivered: int = 0,
    names: dict | None = None,
) -> str:
    """The one line logged per connection, at close; `conn` is a medtls.core.events.ConnInfo.

    `upstream` (added as `upstream=`) is where medtls connected on, when it is not the
    destination the client dialled (explicit mode: the listener). The byte counts are bytes
    delivered: what the device wrote into a TLS connection that the peer then refused (TLS 1.3:
    after the handshake, before its first data) is counted as `bytes_not_delivered=`
    instead of `bytes_device_to_lan=` (or `bytes_lan_to_device=` inbound).

    `names` (medtls.core.trail: calling_ae/called_ae, hl7_from/hl7_to/hl7_type; already
    sanitised and bounded) are appended after `opened=` when the first message was read."""
    if conn.direction == "outbound":
        device_to_lan, lan_to_device = bytes_from_client, bytes_from_server
    else:
        device_to_lan, lan_to_device = bytes_from_server, bytes_from_client
    tls = tls_version or ("plaintext" if conn.plaintext else "-")
    went_to = ""
    if upstream and tuple(upstream) != tuple(conn.destination):
        went_to = f"upstream={addr(upstream)} "
    line = (
        f"event=connection id={conn.id} direction={conn.direction} "
        f"route={kv_value(conn.route or '-')} client={addr(conn.client)} "
        f"destination={addr(conn.destination)} "
        f"{went_to}"
        f"device_port={device_port} "
        f"peer={kv_value(peer or '-')} tls={tls} cipher={cipher or '-'} "
        f"{'session=resumed ' if resumed else ''}"
        f"bytes_device_to_lan={device_to_lan} bytes_lan_to_device={lan_to_device} "
        f"{f'bytes_not_delivered={not_delivered} ' if not_delivered else ''}"
        f"duration={duration:.3f} result={result} opened={iso(conn.started)}"
    )
    if names:
        line += "".join(f" {key}={kv_value(names[key])}" for key in FIELDS if key in names)
    return line + f" detail={kv_value(detail)}" if detail else line
