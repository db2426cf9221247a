"""``python -m medload ...`` runs the ``medload`` command (see :mod:`medload.cli`)."""

import sys

from medload.cli import main

# Guarded: worker processes (forkserver/spawn) import this module again to find their work;
# unguarded, each would run the command again (medload.parallel then refuses to use workers).
if __name__ == "__main__":
    sys.exit(main())
