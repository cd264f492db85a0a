"""The HTTP fronts' bearer tokens: one a line in ``http.token_file`` (default
``<state_dir>/http-tokens``), created 0600 with one fresh token at first start.

A token file others can read is used (refusing it would lock its owner out) but reported: a
warning and a ``security:http_tokens_exposed`` audit event. Reading happens at start and on
every reload (SIGHUP), so adding or revoking a token needs no restart.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from routerd.core.config import Config
from routerd.core.fronts.guard import parse_tokens

from ..osdeps import O_BINARY, O_CLOEXEC, effective_uid, others_may_access
from ..state_dir import ensure_private_dir, resolve_state_dir

__all__ = ["TOKEN_FILE_NAME", "TokenFile", "token_path", "load_tokens"]

log = logging.getLogger("routerd.http")

TOKEN_FILE_NAME: Final = "http-tokens"
_HEADER: Final = (
    "# routerd HTTP front: bearer tokens, one a line (send 'Authorization: Bearer <token>').\n"
    "# Add a line to give a tool its own token; remove it to revoke; then `kill -HUP` routerd.\n"
)


def token_path(config: Config, env: Mapping[str, str]) -> Path:
    """Where the token file is (``http.token_file``, else in the state directory)."""
    if config.http.token_file:
        return Path(config.http.token_file)
    return resolve_state_dir(config.daemon.state_dir, env, uid=effective_uid()) / TOKEN_FILE_NAME


class TokenFile:
    """What was read from the token file: its tokens, and whether others may read it."""

    def __init__(self, path: Path, tokens: tuple[str, ...], exposed: bool, created: bool):
        self.path = path
        self.tokens = tokens
        self.exposed = exposed
        self.created = created


def _create(path: Path) -> None:
    ensure_private_dir(path.parent)  # an existing directory is left as it is
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC | O_BINARY, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(_HEADER + secrets.token_urlsafe(32) + "\n")


def load_tokens(path: Path, *, create: bool) -> TokenFile:
    """Read ``path`` (creating it with one token when absent and ``create``). Raises OSError
    when it cannot be read or made."""
    created = False
    if create and not path.exists():
        try:
            _create(path)
            created = True
            log.info("created the HTTP front's token file %s (0600, one token)", path)
        except FileExistsError:
            pass  # made meanwhile: read it
    with path.open(encoding="utf-8") as f:
        mode = os.fstat(f.fileno()).st_mode
        text = f.read()
    exposed = others_may_access(mode)
    return TokenFile(path, parse_tokens(text), exposed, created)
