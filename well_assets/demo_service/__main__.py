"""`python -m well_assets.demo_service`: the demo-server command without the main CLI."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
