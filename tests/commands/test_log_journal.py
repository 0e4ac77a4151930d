"""``biaswatch log`` with log_file = "-": the events read back through journalctl."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

from biaswatch.config import load_config
from biaswatch.testing.helpers import run_cli, write_config

ENTRIES = [
    {"event": "service.started", "level": "info"},
    {"event": "frame.rejected", "level": "warning", "camera": "cryo", "reason": "not FITS"},
    {"event": "frame.rejected", "level": "warning", "camera": "te", "reason": "not FITS"},
]


def journal_config(tmp_path: Path) -> Path:
    """The test config with log_file = "-", as the shipped systemd config has it."""
    config = write_config(tmp_path, service={"log_file": "-"})
    assert 'log_file = "-"' in config.read_text()
    assert load_config(config).log_path is None  # stdout: journald
    return config


def fake_journalctl(folder: Path, entries: list[dict[str, object]], complaints: int = 0) -> Path:
    """A `journalctl` that records its arguments and prints ``entries`` as -o json would.

    ``complaints``: bytes of warnings it writes on stderr first (corrupt journal files).
    """
    folder.mkdir()
    lines = [
        json.dumps({"MESSAGE": json.dumps(e | {"timestamp": "2026-11-25T03:00:00Z"})})
        for e in entries
    ]
    lines.append(json.dumps({"MESSAGE": "Traceback (most recent call last):", "PRIORITY": "3"}))
    output = "\n".join(lines)
    script = folder / "journalctl"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!{sys.executable}
            import sys
            open({str(folder / "argv")!r}, "w").write(" ".join(sys.argv[1:]))
            sys.stderr.write("x" * {complaints})
            sys.stderr.flush()
            print({output!r})
            """
        )
    )
    script.chmod(0o755)
    return folder


def test_journal_read_with_filters(tmp_path: Path) -> None:
    """Warnings of one camera come from journalctl's JSON, the priority passed to it."""
    config = journal_config(tmp_path)
    bin_dir = fake_journalctl(tmp_path / "bin", ENTRIES)
    result = run_cli(
        "log", "--config", config, "--camera", "cryo", "--level", "warning",
        env={"PATH": str(bin_dir)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        '2026-11-25 03:00:00Z WARNING frame.rejected camera=cryo reason="not FITS"',
        "1970-01-01 00:00:00Z ERROR   Traceback (most recent call last):",
    ]
    assert (bin_dir / "argv").read_text() == "-o json --no-pager -t biaswatch -p 4"


def test_journal_follow_asks_journalctl_to_follow(tmp_path: Path) -> None:
    """--follow runs journalctl --follow (every stored entry first, as with a file)."""
    config = journal_config(tmp_path)
    bin_dir = fake_journalctl(tmp_path / "bin", ENTRIES)
    result = run_cli("log", "--config", config, "--follow", env={"PATH": str(bin_dir)})
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 4
    assert (bin_dir / "argv").read_text().endswith("-p 6 --follow --no-tail")


def test_empty_journal_is_one_line(tmp_path: Path) -> None:
    """No entry in the journal: one line saying so, exit 1."""
    config = journal_config(tmp_path)
    bin_dir = fake_journalctl(tmp_path / "bin", [])
    (bin_dir / "journalctl").write_text(f"#!{sys.executable}\n")
    result = run_cli("log", "--config", config, env={"PATH": str(bin_dir)})
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [
        "biaswatch log: no entries in the journal (journalctl -t biaswatch)"
    ]


def test_no_journalctl_is_one_line(tmp_path: Path) -> None:
    """Without journalctl on PATH: one line naming the reason, exit 69 (unavailable)."""
    config = journal_config(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("log", "--config", config, env={"PATH": str(empty)})
    assert result.returncode == 69
    assert len(result.stderr.splitlines()) == 1
    assert "journalctl" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_no_traceback(tmp_path: Path) -> None:
    """A log file that does not exist yet: one line on stderr, exit 1, no traceback."""
    config = write_config(tmp_path)
    result = run_cli("log", "--config", config, env={"PATH": os.environ.get("PATH", "")})
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "log/biaswatch.jsonl" in result.stderr


def test_journalctl_complaining_at_length_does_not_block_the_reading(tmp_path: Path) -> None:
    """200 kB of journalctl warnings (beyond a pipe's 64 KiB) still let every entry through."""
    config = journal_config(tmp_path)
    bin_dir = fake_journalctl(tmp_path / "bin", ENTRIES, complaints=200_000)
    result = run_cli("log", "--config", config, env={"PATH": str(bin_dir)}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("frame.rejected") == 2
