"""Evidence commands of the security analysis (docs/security.md): TLS scan, unit sandbox, Lynis."""
