"""Test support shipped with biaswatch (it must import no test-only package: no pytest).

fits        small real FITS files (make_bias_fits, fits_bytes, write_cryo_raw), a clock
camera      the simulated camera (``biaswatch simulate``; the harness's frames)
odd_bytes   byte edits astropy refuses to make (control characters, odd cards)
helpers     the harness config and its frames, a camera, a catalog, waits, ports, CLI runs
service     the real service as a child process: notify socket, log, catalog readers
"""
