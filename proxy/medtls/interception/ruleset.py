"""Render the interception ruleset from an `InterceptionSpec`: pure functions, text out.

Packet path (see docs/architecture.md): a `bridge` prerouting chain hands the device's TCP, LAN
TLS to the inbound ports and replies to the box's own connections up to the box's IP stack
(`pkttype host`, destination MAC of the bridge); `inet` prerouting delivers them to the medtls
listeners with tproxy; everything else that is TCP and crosses the bridge is dropped, except the
configured plaintext pass-through. Non-TCP traffic is bridged untouched.

The box's own NTP (`ntp.servers`) borrows the device's identity: routed by policy from the dummy
source NTP_SOURCE, SNATed to the device's IP and a port of `ntp_ports`, the replies steered up by
the bridge and de-NATed to the box's socket. Everything else the box sends as the device over UDP,
and anything carrying NTP_SOURCE, is dropped at bridge output.

ACME validation: both tables always hold the set `acme_validators`, empty except while an
enrollment order runs (`validation_window` in host.py fills and flushes it). TCP from those
sources to the device's address on 443/80 is steered up before every other to_device rule and
tproxied to the enrollment process's responder ports; the device never sees it.
"""

from __future__ import annotations

import ipaddress

from medtls.interception.spec import (
    ACME_HTTP_PORT,
    ACME_TLS_ALPN_PORT,
    ACME_VALIDATORS_SET,
    FWMARK,
    NTP_SOURCE,
    ROUTE_TABLE_DEVICE,
    ROUTE_TABLE_LOCAL,
    ROUTE_TABLE_NTP,
    RULE_PRIORITY,
    TABLE_NAME,
    InterceptionError,
    InterceptionSpec,
)

NTP_PORT = 123
# Where an ACME CA validates a device address: tls-alpn-01 on 443, http-01 on 80 (RFC 8737, 8555).
ACME_VALIDATION_PORTS = {443: ACME_TLS_ALPN_PORT, 80: ACME_HTTP_PORT}

LOG_RATE = "limit rate 10/second burst 20 packets"
LOG_PREFIX = "medtls: "


def _set(values) -> str:
    return "{ " + ", ".join(str(v) for v in values) + " }"


def _log_drop(match: str, what: str, counter: str) -> list[str]:
    """Rate-limited log line plus an unconditional counted drop (a limit must not gate drop)."""
    m = f"{match} " if match else ""
    return [
        f'{m}{LOG_RATE} log prefix "{LOG_PREFIX}{what}: " level warn',
        f'{m}counter name "{counter}" drop',
    ]


def bridge_table(spec: InterceptionSpec, bridge_mac: str) -> str:
    dev, lan, ip = f'"{spec.device_if}"', f'"{spec.lan_if}"', spec.device_ip
    steer = f"meta pkttype set host ether daddr set {bridge_mac}"
    pass_ports = _set(spec.passthrough_ports) if spec.passthrough_ports else None
    plain = spec.plain_outbound
    lines = [f"table bridge {TABLE_NAME} {{"]
    for name in ("foreign_mac", "tagged", "ipv6_tcp", "plaintext_tcp", "own_udp"):
        lines += [f"\tcounter {name} {{", "\t}"]
    lines += _ntp_set(spec)
    lines += _acme_set()
    lines += [
        "\tset plain_out {",
        "\t\ttype ipv4_addr . inet_service",
    ]
    if plain:
        elems = ", ".join(f"{p.address} . {p.port}" for p in plain)
        lines.append(f"\t\telements = {{ {elems} }}")
    lines.append("\t}")

    pre = [
        "type filter hook prerouting priority -300; policy accept;",
    ]
    if spec.device_mac:
        pre += _log_drop(
            f"iifname {dev} ether saddr != {spec.device_mac}",
            "foreign MAC on device port dropped",
            "foreign_mac",
        )
    pre += [
        f"iifname {dev} ip saddr {ip} meta l4proto tcp jump from_device",
        f"iifname {lan} ip daddr {ip} meta l4proto tcp jump to_device",
    ]
    if spec.ntp_servers:
        nlo, nhi = spec.ntp_ports
        # Replies to the box's NTP go to the box only, never on to the device.
        pre.append(
            f"iifname {lan} ip daddr {ip} ip saddr @ntp_servers udp sport {NTP_PORT} "
            f"udp dport {nlo}-{nhi} {steer} accept"
        )
    from_device = ["ip daddr . tcp dport @plain_out return"]
    if pass_ports:
        from_device.append(f"tcp sport {pass_ports} return")
    from_device.append(f"{steer} accept")
    to_device = [
        # First: while an order runs, the CA's validation connections belong to the box.
        f"ip saddr @{ACME_VALIDATORS_SET} tcp dport {_set(sorted(ACME_VALIDATION_PORTS))} "
        f"{steer} accept",
        "ip saddr . tcp sport @plain_out return",
    ]
    if pass_ports:
        to_device.append(f"tcp dport {pass_ports} return")
    if spec.inbound_ports:
        to_device.append(f"tcp dport {_set(spec.inbound_ports)} {steer} accept")
    lo, hi = spec.local_ports
    to_device.append(f"tcp dport {lo}-{hi} {steer} accept")

    fwd = ["type filter hook forward priority filter; policy accept;"]
    fwd += _log_drop("ether type { 8021q, 8021ad }", "VLAN-tagged frame dropped", "tagged")
    fwd += _log_drop("ether type { 0x8863, 0x8864 }", "PPPoE frame dropped", "tagged")
    fwd += _log_drop(
        "ether type ip6 meta l4proto tcp", "IPv6 TCP blocked (not intercepted)", "ipv6_tcp"
    )
    fwd.append("ether type ip meta l4proto tcp jump forward_tcp")
    fwd_tcp = []
    if pass_ports:
        fwd_tcp += [
            f"iifname {lan} oifname {dev} ip daddr {ip} tcp dport {pass_ports} accept",
            f"iifname {dev} oifname {lan} ip saddr {ip} tcp sport {pass_ports} accept",
        ]
    fwd_tcp += [
        f"iifname {dev} oifname {lan} ip saddr {ip} ip daddr . tcp dport @plain_out accept",
        f"iifname {lan} oifname {dev} ip daddr {ip} ip saddr . tcp sport @plain_out accept",
    ]
    fwd_tcp += _log_drop("", "plaintext TCP dropped", "plaintext_tcp")

    out = ["type filter hook output priority filter; policy accept;"]
    # The box resolves the device only on the device port and LAN hosts only on the LAN port.
    out += [
        f"oifname {lan} arp operation request arp daddr ip {ip} drop",
        f"oifname {dev} arp operation request arp daddr ip != {ip} drop",
    ]
    if spec.device_mac:
        # Frames the box sends as the device carry the device's MAC on the LAN.
        out.append(f"oifname {lan} ip saddr {ip} ether saddr set {spec.device_mac}")
    out += [
        f'ip saddr {NTP_SOURCE} counter name "own_udp" drop',
        f"arp saddr ip {NTP_SOURCE} drop",
    ]
    if spec.ntp_servers:
        nlo, nhi = spec.ntp_ports
        out.append(
            f"ip saddr {ip} ip daddr @ntp_servers udp sport {nlo}-{nhi} udp dport {NTP_PORT} accept"
        )
    # The box's UDP as the device is its NTP and nothing else.
    out.append(f'ip saddr {ip} meta l4proto udp counter name "own_udp" drop')

    for name, body in (
        ("prerouting", pre),
        ("from_device", from_device),
        ("to_device", to_device),
        ("forward", fwd),
        ("forward_tcp", fwd_tcp),
        ("output", out),
    ):
        lines.append(f"\tchain {name} {{")
        lines += [f"\t\t{rule}" for rule in body]
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def inet_table(spec: InterceptionSpec) -> str:
    br, ip = f'"{spec.bridge}"', spec.device_ip
    mark = f"meta mark set {FWMARK:#x}"
    pre = [
        "type filter hook prerouting priority mangle; policy accept;",
        f"iifname != {br} return",
        f"meta l4proto tcp socket transparent 1 {mark} accept",
    ]
    pre += [
        f"ip saddr @{ACME_VALIDATORS_SET} ip daddr {ip} tcp dport {port} "
        f"tproxy ip to :{listener} {mark} accept"
        for port, listener in sorted(ACME_VALIDATION_PORTS.items(), reverse=True)
    ]
    pre.append(
        f"ip saddr {ip} meta l4proto tcp tproxy ip to :{spec.outbound_listener} {mark} accept"
    )
    if spec.inbound_ports:
        pre.append(
            f"ip daddr {ip} tcp dport {_set(spec.inbound_ports)} "
            f"tproxy ip to :{spec.inbound_listener} {mark} accept"
        )
    # Steered TCP no listener took (medtls stopped or restarting): the device gets a RST at once;
    # the rest is dropped here, never routed on (a RST to a LAN peer has no route without an
    # address of the box's own). TCP to a management address on the bridge is not touched.
    pre += [
        f"ip saddr {ip} meta l4proto tcp reject with tcp reset",
        f'ip daddr {ip} meta l4proto tcp counter name "unclaimed" drop',
    ]
    fwd = [
        "type filter hook forward priority filter; policy accept;",
        f'iifname {br} counter name "routed" drop',
        f'oifname {br} counter name "routed" drop',
    ]
    chains = [("prerouting", pre), ("forward", fwd)]
    if spec.ntp_servers:
        chains += _ntp_chains(spec)
    lines = [f"table inet {TABLE_NAME} {{"]
    for name in ("unclaimed", "routed"):
        lines += [f"\tcounter {name} {{", "\t}"]
    lines += _ntp_set(spec)
    lines += _acme_set()
    for name, body in chains:
        lines.append(f"\tchain {name} {{")
        lines += [f"\t\t{rule}" for rule in body]
        lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _ntp_set(spec: InterceptionSpec) -> list[str]:
    if not spec.ntp_servers:
        return []
    return [
        "\tset ntp_servers {",
        "\t\ttype ipv4_addr",
        f"\t\telements = {_set(spec.ntp_servers)}",
        "\t}",
    ]


def _acme_set() -> list[str]:
    return [
        f"\tset {ACME_VALIDATORS_SET} {{",
        "\t\ttype ipv4_addr",
        "\t\tflags interval",
        "\t}",
    ]


def validation_sources(sources) -> list[str]:
    """The validation source networks, collapsed (an interval set refuses overlapping
    elements); each must be IPv4 (the device address is IPv4 only)."""
    nets = []
    for i, source in enumerate(sources):
        try:
            net = ipaddress.ip_network(str(source), strict=False)
        except ValueError:
            raise InterceptionError(
                f"enrollment.validation_sources[{i}]: not an address or network: {source!r}"
            ) from None
        if net.version != 4:
            raise InterceptionError(
                f"enrollment.validation_sources[{i}]: {source}: only IPv4 sources are steered"
            )
        nets.append(net)
    return [str(n) for n in ipaddress.collapse_addresses(nets)]


def validation_open_script(sources) -> str:
    """One `nft -f` transaction putting exactly these sources into both owned sets."""
    nets = validation_sources(sources)
    if not nets:
        raise InterceptionError(
            "enrollment.validation_sources: empty (required in transparent mode)"
        )
    lines = validation_close_script().splitlines()
    for family in ("bridge", "inet"):
        lines.append(f"add element {family} {TABLE_NAME} {ACME_VALIDATORS_SET} {_set(nets)}")
    return "\n".join(lines) + "\n"


def validation_close_script() -> str:
    """One `nft -f` transaction emptying both sets (validation connections are dropped again)."""
    return "".join(
        f"flush set {family} {TABLE_NAME} {ACME_VALIDATORS_SET}\n" for family in ("bridge", "inet")
    )


def _ntp_chains(spec: InterceptionSpec) -> list[tuple[str, list[str]]]:
    """Connection tracking only for the box's NTP (the SNAT needs it), none for the device's
    flows, so tproxy and the transparent sockets see no conntrack or NAT at all."""
    br, ip = f'"{spec.bridge}"', spec.device_ip
    nlo, nhi = spec.ntp_ports
    raw_pre = [
        "type filter hook prerouting priority raw; policy accept;",
        f"iifname {br} ip saddr @ntp_servers udp sport {NTP_PORT} ip daddr {ip} "
        f"udp dport {nlo}-{nhi} return",
        f"ip saddr {ip} notrack",
        f"ip daddr {ip} notrack",
    ]
    raw_out = [
        "type filter hook output priority raw; policy accept;",
        f"ip saddr {ip} notrack",
        f"ip daddr {ip} notrack",
    ]
    snat = [
        "type nat hook postrouting priority srcnat; policy accept;",
        f"oifname {br} ip saddr {NTP_SOURCE} ip daddr @ntp_servers udp dport {NTP_PORT} "
        f"snat ip to {ip}:{nlo}-{nhi}",
    ]
    return [("raw_prerouting", raw_pre), ("raw_output", raw_out), ("ntp_snat", snat)]


def nft_script(spec: InterceptionSpec, bridge_mac: str) -> str:
    """One `nft -f` transaction that creates or atomically replaces both owned tables."""
    head = []
    for family in ("bridge", "inet"):
        head += [f"table {family} {TABLE_NAME}", f"delete table {family} {TABLE_NAME}"]
    return "\n".join(head) + "\n" + bridge_table(spec, bridge_mac) + inet_table(spec)


def nft_teardown_script() -> str:
    """Deletes both owned tables; creating first makes it succeed when they are absent."""
    lines = []
    for family in ("bridge", "inet"):
        lines += [f"table {family} {TABLE_NAME}", f"delete table {family} {TABLE_NAME}"]
    return "\n".join(lines) + "\n"


def sysctls(spec: InterceptionSpec) -> list[tuple[str, str]]:
    """Kernel settings the ruleset depends on (keys in /proc/sys dotted form)."""
    lo, hi = spec.local_ports
    out = [
        # With bridge netfilter on, bridged frames traverse the ip hooks and tproxy fails.
        ("net.bridge.bridge-nf-call-iptables", "0"),
        ("net.bridge.bridge-nf-call-ip6tables", "0"),
        ("net.bridge.bridge-nf-call-arptables", "0"),
        ("net.ipv4.ip_forward", "0"),
        ("net.ipv4.ip_local_port_range", f"{lo} {hi}"),
    ]
    for ifname in (spec.bridge, spec.device_if, spec.lan_if):
        out.append((f"net.ipv6.conf.{ifname}.disable_ipv6", "1"))
    return out


def ip_rules(spec: InterceptionSpec) -> list[list[str]]:
    """`ip` argument vectors of the policy rules (deleted by priority on teardown)."""
    return [
        ["-4", "rule", "add", "fwmark", f"{FWMARK:#x}", "lookup", str(ROUTE_TABLE_LOCAL),
         "priority", str(RULE_PRIORITY)],
        ["-4", "rule", "add", "from", spec.device_ip, "lookup", str(ROUTE_TABLE_DEVICE),
         "priority", str(RULE_PRIORITY + 1)],
        ["-4", "rule", "add", "to", spec.device_ip, "lookup", str(ROUTE_TABLE_DEVICE),
         "priority", str(RULE_PRIORITY + 2)],
    ] + [
        ["-4", "rule", "add", "to", server, "ipproto", "udp", "dport", str(NTP_PORT),
         "lookup", str(ROUTE_TABLE_NTP), "priority", str(RULE_PRIORITY + 3)]
        for server in spec.ntp_servers
    ]  # fmt: skip


def _bridge_routes(spec: InterceptionSpec, table: int, src: list[str]) -> list[list[str]]:
    """The box's traffic as the device leaves on the bridge: on-link inside the device's subnet,
    via `device.gateway` outside it (`onlink`: the bridge has no address the kernel could
    validate the gateway against); without a gateway everything is on-link."""
    tail = [*src, "table", str(table)]
    if spec.gateway is None:
        return [["-4", "route", "replace", "default", "dev", spec.bridge, "scope", "link", *tail]]
    return [
        ["-4", "route", "replace", spec.subnet, "dev", spec.bridge, "scope", "link", *tail],
        ["-4", "route", "replace", "default", "via", spec.gateway, "dev", spec.bridge, "onlink",
         *tail],
    ]  # fmt: skip


def route_destinations(spec: InterceptionSpec, table: int) -> set[str]:
    """Destinations `ip_routes` installs in `table` (anything else there is stale)."""
    return {argv[3] for argv in ip_routes(spec) if argv[1] == "route" and argv[-1] == str(table)}


def ip_routes(spec: InterceptionSpec) -> list[list[str]]:
    out = [
        ["-4", "route", "replace", "local", "0.0.0.0/0", "dev", "lo",
         "table", str(ROUTE_TABLE_LOCAL)],
        *_bridge_routes(spec, ROUTE_TABLE_DEVICE, []),
    ]  # fmt: skip
    if spec.ntp_servers:
        out += [
            ["-4", "addr", "replace", f"{NTP_SOURCE}/32", "dev", "lo", "scope", "host"],
            *_bridge_routes(spec, ROUTE_TABLE_NTP, ["src", NTP_SOURCE]),
        ]
    if spec.device_mac:
        out.append(
            ["-4", "neigh", "replace", spec.device_ip, "lladdr", spec.device_mac,
             "dev", spec.bridge, "nud", "permanent"]
        )  # fmt: skip
    return out


def rule_priorities() -> list[int]:
    return [RULE_PRIORITY, RULE_PRIORITY + 1, RULE_PRIORITY + 2, RULE_PRIORITY + 3]


def render(spec: InterceptionSpec, bridge_mac: str) -> str:
    """The complete plan as one text: a valid `nft -f` file whose comments carry the rest."""
    lines = [
        f"#!/usr/sbin/nft -f\n# medtls interception for device {spec.device_ip}"
        + (f" ({spec.device_mac})" if spec.device_mac else "")
        + f" on bridge {spec.bridge} (device port {spec.device_if}, LAN port {spec.lan_if})",
        "# sysctl (applied before the tables):",
    ]
    lines += [f"#   {k} = {v}" for k, v in sysctls(spec)]
    lines.append("# policy routing (ip):")
    lines += [f"#   ip {' '.join(argv)}" for argv in ip_rules(spec) + ip_routes(spec)]
    lines.append("# bridge: no address on the bridge or its ports; applied atomically by `nft -f`:")
    return "\n".join(lines) + "\n" + nft_script(spec, bridge_mac)
