"""``python -m guild`` is the ``guild`` command."""

import sys

from .cli import main

sys.exit(main())
