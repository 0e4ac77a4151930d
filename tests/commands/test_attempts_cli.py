"""`biaswatch attempts` on a catalog the tests fill (the commands tier)."""

from __future__ import annotations

import json
from pathlib import Path

from biaswatch.catalog.store import Catalog
from biaswatch.testing.helpers import run_cli
from biaswatch.testing.helpers import valid_frame as valid


def test_attempts_command_lists_the_history(tmp_path: Path, catalog: Catalog) -> None:
    """`biaswatch attempts --json` prints every attempt with its set's camera and night."""
    set_id = catalog.add_to_set(valid("a"))
    catalog.attempt_started(set_id, "combine", "dask", "tcp://10.0.0.5:4000")
    catalog.attempt_started(set_id, "combine", "dask", "tcp://10.0.0.6:4000")
    catalog.attempt_ended(set_id, "combine", "tcp://10.0.0.6:4000", "done")
    catalog.close()
    config = tmp_path / "config.toml"
    config.write_text('[service]\nstate_dir = "state"\n[cameras.cryo]\nwatch = ["in"]\n')
    listed = json.loads(run_cli("attempts", "--config", config, "--json", check=True).stdout)
    assert [(a["camera"], a["night"], a["outcome"]) for a in listed] == [
        ("cryo", "2026-11-24", "lost"),
        ("cryo", "2026-11-24", "done"),
    ]
    table = run_cli("attempts", "--config", config, check=True).stdout
    assert "tcp://10.0.0.5:4000" in table and "lost" in table and "ran again on" in table
