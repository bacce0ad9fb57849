"""Pure imaging: DICOM decoding, de-identification, rendering, synthetic studies."""
