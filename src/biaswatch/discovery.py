"""Which config file a command or the Python API reads, and why (issue 15, item 6).

``--config PATH`` (the API's ``config=``), else ``$BIASWATCH_CONFIG``, else
/etc/biaswatch/config.toml if it exists, else ./config.toml. The installed service's
unit passes /etc/biaswatch/config.toml with --config; an operator's shell and a
reduction script find the same file without being told.

Standard library only: ``biaswatch --help`` imports it through cli/common.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from biaswatch.errors import ConfigError

# Where the installed service's config lives (the shipped systemd unit passes it as
# --config too); tried when neither --config nor $BIASWATCH_CONFIG says otherwise.
SYSTEM_CONFIG = Path("/etc/biaswatch/config.toml")
ENVIRONMENT_VARIABLE = "BIASWATCH_CONFIG"
LOCAL = "./config.toml"
BUILT_IN = "built-in defaults"


class NoConfig(ConfigError):
    """The config file chosen (by --config, $BIASWATCH_CONFIG or the default) is not there."""


def discover_config(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
    system: Path = SYSTEM_CONFIG,
) -> tuple[Path, str]:
    """The config file to use and how it was chosen (the first that applies wins).

    ``explicit`` (``--config``); else ``$BIASWATCH_CONFIG`` (if set and not empty);
    else the system config if it exists; else ``./config.toml``. ``environ`` and
    ``system`` are parameters so tests can point them elsewhere than the real ones.
    """
    if explicit is not None:
        return Path(explicit), "--config"
    if environ.get(ENVIRONMENT_VARIABLE):
        return Path(environ[ENVIRONMENT_VARIABLE]), f"${ENVIRONMENT_VARIABLE}"
    if system.is_file():
        return system, str(system)
    return Path("config.toml"), LOCAL


def existing_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The discovered config file as an absolute path.

    Raises:
        NoConfig: the chosen file does not exist; the message says how it was chosen.
    """
    path, source = discover_config(explicit)
    path = path.absolute()
    if not path.exists():
        raise NoConfig([f"no config at {path} (from {why_chosen(source)})"])
    return path


def why_chosen(source: str) -> str:
    """How the config was chosen, in words; the last resorts say what was not there."""
    if source in (LOCAL, BUILT_IN):
        return f"{source}: no --config, ${ENVIRONMENT_VARIABLE} unset, no {SYSTEM_CONFIG}"
    return source
