"""The I/O shell: sockets, HTTP, subprocesses, signals, systemd. Thin; decisions live in core."""
