"""Test support shipped with biaswatch: small real FITS files, fakes, the simulated camera."""
