"""``biaswatch reject`` / ``accept`` move the master file, its links and the camera's index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from biaswatch.testing.fits import write_cryo_raw
from biaswatch.testing.helpers import run_cli, write_config
from biaswatch.testing.service import catalog_rows

# Reads index.json as a reduction script without biaswatch would: isolated (-I: no
# PYTHONPATH, no site-packages of the user), json only, and says so.
PLAIN_READER = (
    "import json, sys; index = json.load(open(sys.argv[1])); "
    "assert not [m for m in sys.modules if m.startswith('biaswatch')]; "
    "print(json.dumps([[m['file'], m['state'], m['latest']] for m in index['masters']]))"
)


def plain_index(masters: Path) -> list[list[object]]:
    """The cryo index's (file, state, latest) per master, read in a process without biaswatch."""
    command = [sys.executable, "-I", "-c", PLAIN_READER, str(masters / "cryo" / "index.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert isinstance(loaded, list)
    return loaded


def one_master(tmp_path: Path) -> tuple[Path, Path]:
    """A config whose catalog ``backfill`` gave one accepted master; the config and the master."""
    config = write_config(tmp_path, expected_frames=5, min_frames=3)
    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(3):  # night 2025-03-10 in Chicago
        write_cryo_raw(archive / f"b{i}.fits", 100 + i, date_obs=f"2025-03-11T03:00:0{i}")
    run_cli("backfill", "--config", config, "--camera", "cryo", archive, check=True)
    (row,) = catalog_rows(config, "SELECT path FROM masters")
    return config, Path(str(row["path"]))


def recorded(config: Path) -> tuple[str, str]:
    """The one master's (state, path) in the catalog."""
    (row,) = catalog_rows(config, "SELECT state, path FROM masters")
    return str(row["state"]), str(row["path"])


def test_reject_and_accept_move_the_file_and_rewrite_the_index(tmp_path: Path) -> None:
    """Reject: rejected folder and name, no latest.fits, index says so; accept: all back."""
    config, master = one_master(tmp_path)
    masters, content = tmp_path / "masters", master.read_bytes()
    accepted_file = f"2025-03-10/{master.name}"
    assert plain_index(masters) == [[accepted_file, "accepted", True]]
    latest = masters / "cryo" / "latest.fits"
    assert latest.resolve() == master.resolve()

    rejected_name = master.name.replace("bias_", "rejected_", 1)
    moved = masters / "cryo" / "rejected" / "2025-03-10" / rejected_name
    done = run_cli("reject", "--config", config, master, "--why", "light leak", check=True)
    assert done.stdout.startswith(f"{moved}: rejected by ")
    assert done.stdout.rstrip().endswith("latest.fits -> nothing accepted")
    assert moved.read_bytes() == content and not master.exists()
    assert recorded(config) == ("rejected", str(moved))
    assert not latest.is_symlink()
    assert plain_index(masters) == [[f"rejected/2025-03-10/{rejected_name}", "rejected", False]]
    assert list(masters.glob("**/bias_*.fits")) == []

    # The path printed before the move still names the master.
    done = run_cli("accept", "--config", config, master, "--why", "fine after all", check=True)
    assert done.stdout.startswith(f"{master}: accepted by ")
    assert done.stdout.rstrip().endswith(f"latest.fits -> {master}")
    assert master.read_bytes() == content and not moved.exists()
    assert recorded(config) == ("accepted", str(master))
    assert latest.resolve() == master.resolve()
    assert plain_index(masters) == [[accepted_file, "accepted", True]]


def test_a_verdict_killed_before_its_rename_is_finished_by_the_next(tmp_path: Path) -> None:
    """SIGKILL between the commit and the rename; the next verdict command moves the file first."""
    config, master = one_master(tmp_path)
    moved = master.parent.parent / "rejected" / master.parent.name
    moved /= master.name.replace("bias_", "rejected_", 1)
    killed = run_cli(
        *("reject", "--config", config, master, "--why", "light leak"),
        env={"BIASWATCH_CRASH_AT": "after_verdict_commit"},
    )
    assert killed.returncode == -9
    assert recorded(config) == ("rejected", str(moved))
    assert master.is_file() and not moved.exists()  # the crash: catalog changed, file not
    done = run_cli("reject", "--config", config, master, "--why", "still a leak", check=True)
    assert done.stdout.startswith(f"{moved}: rejected by ")
    assert moved.is_file() and not master.exists()
    assert recorded(config) == ("rejected", str(moved))
