"""``python -m ingest_assets``: see ``ingest_assets.cli``."""

import sys

from ingest_assets.cli import main

sys.exit(main())
