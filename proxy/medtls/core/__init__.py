"""Pure decisions and readers of outside input: routing and ACL policy, peer identity (strict
DER), CRL files, ClientHello, outcome categories, the connection log line. No I/O, no sockets."""
