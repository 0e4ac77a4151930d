"""One file to one frame record: the camera lanes, readiness, opening, reading, calibration."""
