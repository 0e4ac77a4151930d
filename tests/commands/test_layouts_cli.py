"""``simulate --layout`` and config.toml's commented layout cameras, as an operator uses them."""

from __future__ import annotations

from pathlib import Path

import pytest
from astropy.io import fits

from biaswatch.config import SiteConfig, load_config
from biaswatch.frames.read import ingest
from biaswatch.testing.helpers import run_cli

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"
MARKER = "# --- Camera layouts (issue 13)"


def uncommented(text: str) -> str:
    """config.toml with its layout cameras uncommented (one "# " taken from each line)."""
    head, block = text.split(MARKER, 1)
    lines = block.splitlines()[1:]
    return head + "\n".join(line[2:] if line.startswith("# ") else line[1:] for line in lines)


def _layout_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(uncommented(REPO_CONFIG.read_text()) + "\n")
    return config


def test_every_commented_layout_camera_is_accepted(tmp_path: Path) -> None:
    """check-config accepts every layout camera uncommented; its print loads back the same."""
    config = _layout_config(tmp_path)
    result = run_cli("check-config", "--config", config)
    assert result.returncode == 0, result.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(result.stdout)
    again, first = load_config(printed), load_config(config)
    assert {c.name for c in first.cameras} >= {"echelle", "twoamp", "binned", "cryo", "te"}
    assert again.camera("twoamp").calibrate == first.camera("twoamp").calibrate
    assert first.camera("echelle").calibrate.overscan.describe() == "auto"


def test_config_toml_as_shipped_watches_only_today_s_cameras() -> None:
    """The layout cameras are commented out: `make run` still watches cryo and te only."""
    assert [c.name for c in load_config(REPO_CONFIG).cameras] == ["cryo", "te"]


@pytest.mark.parametrize(
    ("camera", "layout", "segments"),
    [("echelle", "extensions", 4), ("twoamp", "amplifiers", 2), ("binned", "binned", 0)],
)
def test_simulate_layout_writes_frames_the_camera_calibrates(
    tmp_path: Path, camera: str, layout: str, segments: int
) -> None:
    """simulate --layout writes bias frames its example camera calibrates, segment by segment."""
    config = _layout_config(tmp_path)
    args = ("--camera", camera, "--layout", layout, "--frames", "1", "--interval", "0")
    result = run_cli("simulate", "--config", config, *args)
    assert result.returncode == 0, result.stderr
    settings = load_config(config).camera(camera)
    (path,) = sorted(settings.watch[0].iterdir())
    assert f"wrote {path.name}" in result.stdout
    record = ingest(path, settings, SiteConfig(), tmp_path / "work")
    assert record.status == "valid", record.reason
    assert len(record.segments_qc) == segments
    assert all(abs(qc.level) < 3 for _, qc in record.segments_qc)
    if layout == "binned":
        assert fits.getheader(path)["CCDSUM"] == "2 1"


def test_simulate_amplifiers_needs_the_camera_s_amplifiers(tmp_path: Path) -> None:
    """--layout amplifiers for a camera without calibrate.amplifiers exits 2 and says why."""
    config = _layout_config(tmp_path)
    args = ("--camera", "cryo", "--layout", "amplifiers", "--frames", "1", "--interval", "0")
    result = run_cli("simulate", "--config", config, *args)
    assert result.returncode == 2
    assert "camera cryo has no calibrate.amplifiers" in result.stderr
