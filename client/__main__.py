"""Usage: python -m visionpool.client worker ..."""

import sys

from .cli import main

sys.exit(main())
