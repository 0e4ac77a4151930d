"""``python -m biaswatch`` runs the command line."""

import sys

from biaswatch.cli import main

sys.exit(main())
