"""``python -m routerd.mcp_bridge``: the same as ``routerd-mcp``."""

from routerd.mcp_bridge.cli import main

raise SystemExit(main())
