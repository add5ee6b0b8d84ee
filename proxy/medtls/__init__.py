"""medtls: put legacy medical devices (DICOM, HL7 MLLP) behind mutual TLS."""

__version__ = "0.1.0"
