"""routerd: a local LLM router daemon for coding work in offline and air-gapped networks.

``routerd.core`` holds the pure decisions (no I/O, no clocks); ``routerd.shell`` holds every
piece of I/O that carries them out. The wire contract lives in the ``routerd_client`` package.
"""

__version__ = "0.1.0"
