"""``python -m medload ...`` runs the ``medload`` command (see :mod:`medload.cli`)."""

import sys

from medload.cli import main

sys.exit(main())
