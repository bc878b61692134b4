"""Usage: python -m visionpool.worker [options]   (the same as ``visionpool worker``)"""

import sys

from .cli import COMMAND

sys.exit(COMMAND.main())
