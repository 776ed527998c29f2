"""`python -m tasks`: the `textclf` command line (tasks/apps/cli.py)."""

import sys

from tasks.apps.cli import main

sys.exit(main())
