"""Reduction code and operators who may only read, beside the real running service (issue 15).

The service (root here) makes the catalog and the masters; a second master is rejected
with ``biaswatch reject``. Then, while the service still runs, the Python API and every
reading command run as uid 65534 (setpriv, as tests/commands/test_readonly.py): each
succeeds, none returns the rejected master, and none creates a file (every file the
reader made would be its own).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from astropy.io import fits

from biaswatch.testing.helpers import run_cli, wait_until, write_config, write_frames
from biaswatch.testing.service import READER, as_uid, catalog_rows, running_service, searchable_tree

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to run commands as another uid"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

NIGHT = "2030-01-14"  # the frames are dated 2030-01-15T03:00 UTC: the evening before, in Chicago
IN_NIGHT = "2030-01-15T04:00:00"
TAKEN = dt.datetime(2030, 1, 15, 3, tzinfo=dt.UTC)

# What reduction code runs: the five lines of the README's "Using the masters", as JSON.
API_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from biaswatch.calibrations import explain, master_for, masters, read_master
    config, when = sys.argv[1], sys.argv[2]
    path = master_for("cryo", when, config=config)
    bias = read_master(path)
    print(json.dumps({
        "path": str(path),
        "shape": list(bias.shape),
        "has_uncertainty": bias.uncertainty is not None,
        "states": sorted(m.state for m in masters("cryo", config=config)),
        "outcomes": {str(d.candidate.path): d.outcome
                     for d in explain("cryo", when, config=config).decisions},
    }))
    """
)


@pytest.fixture
def tree() -> Iterator[Path]:
    """A new folder under the system's temporary folder that every user may search."""
    with searchable_tree("biaswatch-readonly-service-") as root:
        yield root


def as_reader(*command: str | Path) -> subprocess.CompletedProcess[str]:
    """``command`` as the reading user, output as text."""
    full = [*as_uid(READER), *map(str, command)]
    return subprocess.run(full, capture_output=True, text=True, timeout=120, check=False)


def readers_files(root: Path, skip: Path) -> list[Path]:
    """Every file or folder below ``root`` (but ``skip``) that the reading user owns."""
    return [
        p
        for p in root.rglob("*")
        if p.lstat().st_uid == READER and p != skip and skip not in p.parents
    ]


def masters_made(config: Path) -> list[str]:
    """The paths of the masters in the catalog, in sequence order."""
    rows = catalog_rows(config, "SELECT path FROM masters ORDER BY sequence")
    return [str(r["path"]) for r in rows]


def commands(config: Path, out: Path) -> dict[str, list[str | Path]]:
    """Each reading command an operator runs, by a short name."""
    base: list[str | Path] = [sys.executable, "-m", "biaswatch"]
    return {
        "api": [sys.executable, "-c", API_SCRIPT, config, IN_NIGHT],
        "masters": [*base, "masters", "--config", config],
        "masters --json": [*base, "masters", "--config", config, "--json"],
        "masters --for --explain": [
            *base,
            "masters",
            "--config",
            config,
            "--for",
            IN_NIGHT,
            "--camera",
            "cryo",
            "--explain",
        ],
        "status": [*base, "status", "--config", config],
        "status --json": [*base, "status", "--config", config, "--json"],
        "attempts": [*base, "attempts", "--config", config],
        "log": [*base, "log", "--config", config],
        "report": [*base, "report", "--config", config, "--night", NIGHT, "-o", out / "n.html"],
    }


def test_api_and_reading_commands_as_a_reader_while_the_service_runs(tree: Path) -> None:
    """As uid 65534 beside the running service all succeed; the rejected master never comes back."""
    config = write_config(tree, expected_frames=3, min_frames=3)
    out = tree / "reader"
    out.mkdir()
    os.chown(out, READER, READER)
    with running_service(config) as service:
        write_frames(config, "cryo", 3, interval=0.0, now=lambda: TAKEN)
        wait_until(lambda: len(masters_made(config)) == 1, 120, service.tail)
        later = tree / "incoming" / "cryo" / "later"
        write_frames(config, "cryo", 3, interval=0.0, seed=7, now=lambda: TAKEN, out_dir=later)
        wait_until(lambda: len(masters_made(config)) == 2, 120, service.tail)
        first, second = masters_made(config)
        run_cli("reject", "--config", config, second, "--why", "test: overruled", check=True)
        rejected = masters_made(config)[1]  # its path after the verdict (rejected place)
        results = {name: as_reader(*c) for name, c in commands(config, out).items()}
        assert service.proc.poll() is None  # still running through every read
    for name, result in results.items():
        # status's Nagios code: WARNING (1), cryo's newest master having been rejected;
        # the service runs (else CRITICAL) and the reader reads its lock.
        expected = 1 if name.startswith("status") else 0
        assert result.returncode == expected, f"{name}: {result.stderr}"
    warning = "BIASWATCH WARNING - cryo: its newest master was rejected\n"
    assert results["status"].stdout.startswith(warning)
    api = json.loads(results["api"].stdout)
    assert api["path"] == first and api["has_uncertainty"]
    assert api["shape"] == list(fits.getdata(first).shape)
    assert api["states"] == ["accepted", "rejected"]
    assert api["outcomes"] == {first: "chosen", rejected: "rejected"}
    explained = results["masters --for --explain"].stdout
    assert f"rejected            {rejected}" in explained and explained.endswith(f"{first}\n")
    assert {m["state"] for m in json.loads(results["masters --json"].stdout)} == {
        "accepted",
        "rejected",
    }
    assert (out / "n.html").is_file() and "master.published" in results["log"].stdout
    # A glob of the accepted pattern never lists the rejected master, whatever its depth.
    globbed = {str(p) for p in (tree / "masters").glob("**/bias_*.fits")}
    assert first in globbed and rejected not in globbed
    assert readers_files(tree, out) == []
