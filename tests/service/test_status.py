"""``biaswatch status`` as an operator runs it, beside and after the real service."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from biaswatch.testing.helpers import run_cli, wait_until, write_config, write_frames
from biaswatch.testing.service import catalog_rows, running_service


def status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``biaswatch status``."""
    return run_cli("status", "--config", config, *args, check=True)


def status_json(config: Path) -> dict[str, Any]:
    """``biaswatch status --json``, parsed."""
    return dict(json.loads(status(config, "--json").stdout))


def test_status_shows_the_service_open_sets_masters_and_rejections(tmp_path: Path) -> None:
    """While running: pid, an open set and what completes it, a rejection; after: the master."""
    config = write_config(tmp_path, expected_frames=5)
    incoming = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        (incoming / "junk.fits").write_bytes(b"not a FITS file" * 300)
        write_frames(config, "cryo", 2, interval=0.0)
        wait_until(
            lambda: len(catalog_rows(config, "SELECT * FROM frames WHERE status != 'seen'")) >= 3,
            60,
            "three frames judged",
        )
        during = status_json(config)
        # Its own subdirectory (watched recursively): names carry the second they were
        # written in, and a fast status can leave both batches in one second.
        write_frames(config, "cryo", 3, interval=0.0, seed=2, out_dir=incoming / "later")
        service.wait_event("master.published", timeout=120)
        assert service.stop()[0] == 0
    assert (during["service"]["running"], during["service"]["pid"]) == (True, service.proc.pid)
    assert during["service"]["since"]
    cryo = next(c for c in during["cameras"] if c["camera"] == "cryo")
    assert cryo["directories"] == {str(incoming): "ok"}
    (open_set,) = cryo["open_sets"]
    assert (open_set["frames"], open_set["expected"]) == (2, 5)
    assert open_set["waiting"] and open_set["next_look"]
    (rejected,) = cryo["rejected_last_24h"]
    assert rejected["file"] == str(incoming / "junk.fits")
    assert rejected["reason"].startswith("not a FITS file")
    after = status_json(config)
    assert after["service"] == {"running": False}
    cryo = next(c for c in after["cameras"] if c["camera"] == "cryo")
    assert cryo["open_sets"] == []
    master = cryo["last_master"]
    assert (master["state"], master["ncombine"]) == ("accepted", 5)
    assert master["qc"]["read_noise"] > 0
    text = status(config).stdout
    assert text.startswith("service: not running\ncamera cryo\n")
    assert f"  last master: {master['path']} (" in text
    assert "    junk.fits: not a FITS file" in text
