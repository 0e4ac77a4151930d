"""``python -m biaswatch`` runs the command line."""

import sys

from biaswatch.cli.main import main

# Guarded: combine children are forked from a forkserver, which re-imports the
# main module under another name and must not run the command line again.
if __name__ == "__main__":
    sys.exit(main())
