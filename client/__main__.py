"""Usage: python -m visionpool.client COMMAND ...   (the same as the ``visionpool`` command)"""

import sys

from visionpool.serving.commands import main

sys.exit(main())
