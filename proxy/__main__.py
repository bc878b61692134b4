"""Usage: python -m visionpool.proxy [options]   (the same as ``visionpool proxy``)"""

import sys

from .cli import COMMAND

sys.exit(COMMAND.main())
