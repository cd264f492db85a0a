"""The version of the routerd-client distribution (kept apart to avoid import cycles)."""

__version__ = "0.1.0"
