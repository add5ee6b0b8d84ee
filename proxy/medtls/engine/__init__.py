"""The event loop, listeners, connections and the byte relay (the I/O side of the proxy)."""
