"""The pure parts of routerd's HTTP fronts (the I/O is in ``routerd.shell.fronts``).

Modules: ``guard`` (listen addresses, bearer tokens, ``Host`` and ``Origin`` checks, the
``http`` section's checks), ``models`` (virtual models, listings, passthrough picks),
``openai_api`` and ``ollama_api`` (each API's requests to ``route`` params and ``route``'s
events to its answers), ``wire`` (status codes, SSE and NDJSON framing, body decoding).

Nothing is imported here, so ``routerd.core.config_checks`` can use ``guard`` without a cycle.
"""
