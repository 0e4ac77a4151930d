"""``biaswatch completion SHELL``: the shell completion script, generated from the parser.

shtab writes it from the same argparse parser the commands use (cli/main.py), so every
command and option completes as it is today; nothing is kept by hand. Imported only
for this command: the other commands never load shtab.
"""

from __future__ import annotations

import argparse

import shtab

from biaswatch.cli.main import build_parser


def print_completion(args: argparse.Namespace) -> int:
    """Print the completion script for ``args.shell`` on stdout."""
    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return 0
