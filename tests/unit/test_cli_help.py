"""Every command's --help: a description, an example that parses, and the exit statuses."""

from __future__ import annotations

import shlex

import pytest

from biaswatch.cli.main import COMMANDS, EXIT_STATUSES, build_parser


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_help_has_a_description_an_example_and_exit_statuses(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``biaswatch NAME --help`` shows its description, its example and the exit-status table."""
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([name, "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    assert COMMANDS[name].help[1:] in shown
    assert f"example:\n  {COMMANDS[name].example}\n" in shown
    assert (COMMANDS[name].statuses or EXIT_STATUSES) in shown  # status: Nagios' codes
    assert "``" not in shown  # reST markup is for the docs, not a terminal


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_example_is_a_valid_command_line(name: str) -> None:
    """Each command's example parses with the real parser, so the help never shows a wrong one."""
    words = shlex.split(COMMANDS[name].example, comments=True)
    assert words[:2] == ["biaswatch", name]
    args = build_parser().parse_args(words[1:])
    assert args.command == name


def test_the_exit_statuses_are_the_ones_the_commands_use() -> None:
    """The table names the statuses cli/common.py defines: 69, 75 and 78 among them."""
    from biaswatch.cli.common import EX_CONFIG, EX_TEMPFAIL, EX_UNAVAILABLE

    for status in (0, 1, 2, EX_UNAVAILABLE, EX_TEMPFAIL, EX_CONFIG):
        assert f"\n  {status:<3} " in f"\n{EXIT_STATUSES}"


def test_status_help_shows_the_nagios_codes_it_exits_with() -> None:
    """status's --help table names rules/monitoring.py's 0-3 by their Nagios names, and 78."""
    from biaswatch.cli.common import EX_CONFIG
    from biaswatch.rules.monitoring import NAMES

    table = COMMANDS["status"].statuses
    for code, name in NAMES.items():
        assert f"\n  {code:<3} {name}" in f"\n{table}"
    assert f"\n  {EX_CONFIG:<3} " in f"\n{table}"
