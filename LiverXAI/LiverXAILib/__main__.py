"""``python -m LiverXAILib`` runs the headless command line."""

import sys

from .cli.main import main

sys.exit(main())
