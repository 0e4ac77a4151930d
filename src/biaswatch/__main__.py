"""``python -m biaswatch`` runs the command line."""

import sys

from biaswatch.cli.main import main

# Guarded: multiprocessing children re-import the main module under another name
# (__mp_main__; multiprocessing.spawn.prepare) and must not run the command line
# again. Run as ``-m biaswatch`` they skip it (the module is found by name); run as
# the installed ``biaswatch`` script they import biaswatch.cli.main, kept light for that.
if __name__ == "__main__":
    sys.exit(main())
