"""The SQLite catalog, the one source of truth: frames, sets, masters, attempts."""
