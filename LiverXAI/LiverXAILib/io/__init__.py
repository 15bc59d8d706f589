"""Files in and out: volumes, DICOM series and SEG, and a result's files."""
