"""Usage: python -m visionpool.client COMMAND ...   (the same as the ``visionpool`` command)"""

import sys

from .commands import main

sys.exit(main())
