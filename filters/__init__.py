"""brandgate's detection engine: bytes in, explained verdict out. Knows nothing of SMTP."""
