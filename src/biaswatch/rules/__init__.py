"""Pure decisions: nights, sets, quality, acceptance. Frozen data in, frozen data out; no I/O."""
