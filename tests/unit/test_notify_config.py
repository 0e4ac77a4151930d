"""The ``[notify]`` table and ``[alerts] url``: defaults, and errors naming table and key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from biaswatch.config import load_config
from biaswatch.errors import ConfigError

Write = Callable[[str], Path]

MINIMAL = """
[cameras.cryo]
watch = ["incoming/cryo"]
"""


def test_notify_defaults_have_no_target(write_config: Write) -> None:
    """Without [notify], no command or url is set and the retry defaults hold."""
    notify = load_config(write_config(MINIMAL)).notify
    assert (notify.command, notify.url) == ((), None)
    assert (notify.timeout_seconds, notify.max_tries, notify.retry_seconds) == (10, 8, 5)


def test_notify_and_alerts_take_a_command_and_an_url(write_config: Write) -> None:
    """[notify] command and url, and [alerts] url, are read as given."""
    text = (
        '[notify]\ncommand = ["/usr/bin/hook", "--json"]\nurl = "https://hooks.example/bias"\n'
        'max_tries = 3\n[alerts]\nurl = "http://127.0.0.1:8080/alarm"\n'
    )
    config = load_config(write_config(text + MINIMAL))
    assert config.notify.command == ("/usr/bin/hook", "--json")
    assert config.notify.url == "https://hooks.example/bias"
    assert config.notify.max_tries == 3
    assert config.alerts.url == "http://127.0.0.1:8080/alarm"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[notify]\nurl = "ftp://host/x"\n', "[notify] url: 'ftp://host/x' is not an http://"),
        ('[notify]\nurl = "http://"\n', "[notify] url: 'http://' is not an http:// or https://"),
        ('[alerts]\nurl = "hooks.example"\n', "[alerts] url: 'hooks.example' is not an http://"),
        ("[notify]\nmax_tries = 0\n", "[notify] max_tries: Input should be greater than or equal"),
        ("[notify]\nretry_seconds = 0\n", "[notify] retry_seconds: Input should be greater"),
        ("[notify]\ntimeout_seconds = -1\n", "[notify] timeout_seconds: Input should be greater"),
        ('[notify]\ncomand = ["x"]\n', "[notify] comand: unknown key; did you mean 'command'?"),
    ],
)
def test_bad_notify_values_name_table_and_key(
    write_config: Write, text: str, expected: str
) -> None:
    """A wrong [notify] or [alerts] url value is an error naming its table and key."""
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text + MINIMAL))
    assert any(expected in p for p in info.value.problems), info.value.problems
