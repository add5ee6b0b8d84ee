"""The medtls virtual lab: namespaces, PKI, real peers and the Mallory cases."""
