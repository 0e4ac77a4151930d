"""The calibrate settings of issue 13: amplifiers and overscan = "auto" in the config file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from biaswatch.config import load_config
from biaswatch.errors import ConfigError
from biaswatch.sections import Section

Write = Callable[[str], Path]

TWOAMP = """
[cameras.twoamp]
watch = ["incoming/twoamp"]
[[cameras.twoamp.calibrate.amplifiers]]
name = "A"
data = "[1:1024,1:350]"
overscan = "[2050:2080,1:350]"
[[cameras.twoamp.calibrate.amplifiers]]
name = "B"
data = "[1025:2048,1:350]"
overscan = "header:BIASSECB"
overscan_model = "poly:2"
"""


def _problems(write_config: Write, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    return info.value.problems


def test_amplifiers_load(write_config: Write) -> None:
    """The issue's amplifier tables load with their sections, keywords and own model."""
    amps = load_config(write_config(TWOAMP)).camera("twoamp").calibrate.amplifiers
    assert [a.name for a in amps] == ["A", "B"]
    assert amps[0].data.section == Section(1, 1024, 1, 350)
    assert (amps[1].overscan.kind, amps[1].overscan.keyword) == ("header", "BIASSECB")
    assert (amps[0].overscan_model, amps[1].overscan_model) == (None, "poly:2")


def test_overscan_auto_loads(write_config: Write) -> None:
    """overscan = "auto" (any case) is accepted and said back as 'auto'."""
    text = '[cameras.e]\nwatch = ["x"]\n[cameras.e.calibrate]\noverscan = "Auto"\n'
    assert load_config(write_config(text)).camera("e").calibrate.overscan.describe() == "auto"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ('overscan = "header:BIASSECB"', 'overscan = "none"'),
            "[cameras.twoamp.calibrate.amplifiers.1] overscan: an amplifier needs a section",
        ),
        (('name = "B"', 'name = "A"'), "amplifier names must differ: A given twice"),
        (('name = "B"', 'name = "B/2"'), "[cameras.twoamp.calibrate.amplifiers.1] name:"),
        (('data = "[1:1024,1:350]"', 'data = "[1:1024]"'), "amplifiers.0] data:"),
        (("overscan_model", "overscan_modle"), "amplifiers.1] overscan_modle: unknown key"),
        (('data = "[1:1024,1:350]"', 'data = "auto"'), "amplifiers.0] data:"),
    ],
)
def test_amplifier_problems_name_table_and_key(
    write_config: Write, change: tuple[str, str], problem: str
) -> None:
    """Each bad amplifier entry is reported with its table (and index) and key."""
    problems = _problems(write_config, TWOAMP.replace(*change))
    assert any(problem in line for line in problems), problems
