"""A small DICOM object with a recognisable patient name and pixel pattern (pydicom)."""

from __future__ import annotations

import random
from pathlib import Path

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

PATIENT_NAME = "CANARY^MALLORY^LAB"
PATIENT_ID = "MEDTLS-LAB-4711"


def make_dicom(path: Path, seed: int = 4711, size: int = 128) -> bytes:
    """Writes the object to `path`; returns its pixel bytes (random, so unmistakable)."""
    pixels = random.Random(seed).randbytes(size * size * 2)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.Modality = "OT"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels
    ds.save_as(path, enforce_file_format=True)
    return pixels


def stored_objects(directory: Path) -> list[tuple[str, str, bytes]]:
    """(file, patient name, pixel bytes) of every object stored in `directory`."""
    from pydicom import dcmread

    out = []
    for f in sorted(directory.glob("*")):
        if f.is_file():
            ds = dcmread(f, force=True)
            out.append((f.name, str(ds.get("PatientName", "")), bytes(ds.get("PixelData", b""))))
    return out
