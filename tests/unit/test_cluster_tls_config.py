"""TLS settings of a Dask executor as the config loads them (no cluster, no process)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from biaswatch.config import load_config
from biaswatch.errors import ConfigError

MINIMAL = '\n[cameras.cryo]\nwatch = ["incoming/cryo"]\n'


Write = Callable[[str], Path]


def problems_of(write_config: Write, text: str) -> list[str]:
    """The problems load_config reports for this TOML text."""
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    return info.value.problems


def test_tls_scheduler_without_certificates_is_a_config_error(write_config: Write) -> None:
    """scheduler = "tls://..." without tls_ca_file and tls_cert_file is refused, naming them."""
    text = '[service]\nexecutor = "dask"\nscheduler = "tls://head:8786"\n' + MINIMAL
    (problem,) = problems_of(write_config, text)
    assert "[service]" in problem and "tls_ca_file" in problem and "tls_cert_file" in problem


def test_tls_files_without_a_tls_scheduler_are_a_config_error(write_config: Write) -> None:
    """TLS files beside a tcp:// scheduler are refused: TLS asked for would not be used."""
    text = (
        '[service]\nexecutor = "dask"\nscheduler = "tcp://head:8786"\n'
        'tls_ca_file = "ca.pem"\n' + MINIMAL
    )
    (problem,) = problems_of(write_config, text)
    assert "tls_ca_file" in problem and "tls://" in problem


def test_tls_files_must_be_readable_at_load(write_config: Write, tmp_path: Path) -> None:
    """A TLS file that is missing is named with its resolved path when the config loads."""
    (tmp_path / "ca.pem").write_text("not checked here: only that it can be read\n")
    text = (
        '[service]\nexecutor = "dask"\nscheduler = "tls://head:8786"\n'
        'tls_ca_file = "ca.pem"\ntls_cert_file = "certs/me.pem"\n' + MINIMAL
    )
    (problem,) = problems_of(write_config, text)
    assert problem.startswith(f"{tmp_path / 'config.toml'}: [service] tls_cert_file: cannot read")
    assert str(tmp_path / "certs" / "me.pem") in problem


def test_tls_files_resolve_against_the_config_file(write_config: Write, tmp_path: Path) -> None:
    """Relative TLS paths are read from the config file's directory."""
    for name in ("ca.pem", "me.pem", "me.key"):
        (tmp_path / name).write_text("x\n")
    text = (
        '[service]\nexecutor = "dask"\nscheduler = "tls://head:8786"\ntls_ca_file = "ca.pem"\n'
        'tls_cert_file = "me.pem"\ntls_key_file = "me.key"\n' + MINIMAL
    )
    service = load_config(write_config(text)).service
    assert (service.tls_ca_file, service.tls_cert_file, service.tls_key_file) == (
        tmp_path / "ca.pem",
        tmp_path / "me.pem",
        tmp_path / "me.key",
    )
