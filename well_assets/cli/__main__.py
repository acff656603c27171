"""`python -m well_assets.cli`: the `well-assets` command."""

import sys

from well_assets.cli.main import main

sys.exit(main())
