"""``python -m routerd_client`` runs routerctl."""

import sys

from routerd_client.cli import main

sys.exit(main())
