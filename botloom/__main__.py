"""``python -m botloom`` runs the command line."""

import sys

from botloom.server.cli import main

sys.exit(main())
