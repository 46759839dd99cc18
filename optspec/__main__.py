"""``python -m optspec``: the same as the ``optspec`` command."""

import sys

from optspec.cli import main

sys.exit(main())
