"""TLS contexts from profiles and material; every ctypes call into OpenSSL lives here."""
