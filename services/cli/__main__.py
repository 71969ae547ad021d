"""`python -m services.cli` is the same as `llmops`."""

import sys

from services.cli.main import main

sys.exit(main())
