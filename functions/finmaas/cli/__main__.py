"""``python -m finmaas.cli`` runs the same ``maas`` command (tests start servers this way)."""

import sys

from . import main

sys.exit(main())
