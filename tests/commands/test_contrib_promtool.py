"""contrib/biaswatch-alerts.yml loaded by Prometheus's own promtool (Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "contrib" / "biaswatch-alerts.yml"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt install prometheus)"
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args``; its output as text."""
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, check=False
    )


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    """promtool check rules accepts every rule in the file."""
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def fired(labels: dict[str, str], summary: str, description: str) -> dict[str, object]:
    """An expected alert: its labels and its annotations as rendered for them."""
    return {
        "exp_labels": labels,
        "exp_annotations": {"summary": summary, "description": description},
    }


NO_MASTER = fired(
    {"severity": "warning", "camera": "cryo"},
    "No accepted master bias for cryo in 36 h",
    "The newest accepted master of cryo is 1d 12h 30m 0s old. See `biaswatch status`"
    " and `biaswatch attempts --camera cryo`.",
)
STALLED = fired(
    {"severity": "critical", "camera": "cryo"},
    "biaswatch: cryo's files give no answer (hung mount?)",
    "The camera's lane has been stuck in one file-system call. Check the disk or mount"
    " holding its directories; it resumes by itself once they answer.",
)
FAILED = fired(
    {"severity": "warning", "camera": "cryo", "state": "failed"},
    "biaswatch: a combine of cryo failed for good",
    "See `biaswatch attempts --camera cryo` for the reasons; `biaswatch combine` runs it"
    " again once mended.",
)


@needs_promtool
def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    """No accepted master past 36 h, a stalled camera, a new failed set fire; fresh ones do not."""
    series = {
        # cryo's master ages a minute a minute from 35 h; te's stays a minute old.
        'biaswatch_last_accepted_master_age_seconds{camera="cryo"}': "126000+60x120",
        'biaswatch_last_accepted_master_age_seconds{camera="te"}': "60x120",
        'biaswatch_camera_stalled{camera="cryo"}': "0x10 1x20",
        'biaswatch_sets{camera="cryo",state="failed"}': "0x10 1x20",
    }
    checks = [
        (30, "BiaswatchNoAcceptedMaster", []),
        (90, "BiaswatchNoAcceptedMaster", [NO_MASTER]),
        (12, "BiaswatchCameraStalled", []),  # stalled 2 min: within its 5 min "for"
        (20, "BiaswatchCameraStalled", [STALLED]),
        (5, "BiaswatchCombineFailed", []),
        (20, "BiaswatchCombineFailed", [FAILED]),
    ]
    test = {
        "interval": "1m",
        "input_series": [{"series": k, "values": v} for k, v in series.items()],
        "alert_rule_test": [
            {"eval_time": f"{minutes}m", "alertname": name, "exp_alerts": alerts}
            for minutes, name, alerts in checks
        ],
    }
    tests = tmp_path / "tests.yml"
    document = {"rule_files": [str(RULES)], "evaluation_interval": "1m", "tests": [test]}
    tests.write_text(yaml.safe_dump(document), encoding="utf-8")
    result = promtool("test", "rules", str(tests))
    assert result.returncode == 0, result.stdout + result.stderr
