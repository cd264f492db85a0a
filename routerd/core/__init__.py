"""Sans-IO core: values in, values out.

Nothing under ``routerd.core`` may import trio, httpx, mcp, socket, time or anything else that
performs I/O or reads a clock; a test enforces it. Time is always a parameter (``now``).
"""
