"""Which workspace a request means, and whether its client may use it (no confused deputy).

routerd runs Serena with its own rights on behalf of clients with theirs, so before a workspace
is used for a client, :func:`resolve_workspace` checks with the classic permission bits, along
the whole path from ``/``, that the client's uid (and groups) could read the workspace root and
the file named: the rule the kernel would apply for that uid
(``routerd.core.serena_access.may_read``). A directory no configured workspace contains becomes
an unlisted workspace: its nearest ancestor holding ``.git`` (else itself), if it looks like a
project and ``serena.unlisted_workspaces`` allows it. A client whose uid is unknown is refused.

On Windows every client with a uid is the daemon's own user (``osdeps.SELF_UID``: the named
pipe's security descriptor, the HTTP token file's ACL), and Serena runs as that user, so it
can reach nothing the client could not: there is no deputy to confuse. Mode bits mean nothing
there (ACLs decide), so the check is the daemon's own access, asked of the OS by opening the
workspace (and the file) for reading; the daemon's user counts as the workspace root's owner
for ``may_write`` (``docs/operations.md``, Windows). Paths are compared by Windows rules there
(``serena_access.path_flavor``: case-insensitive, drives, UNC shares), and the home directory
an unlisted workspace may not be is the daemon's own.
"""

from __future__ import annotations

import os
import posixpath
import stat
import sys
from collections.abc import Mapping

import msgspec

from routerd.core.config import SerenaConfig
from routerd.core.errors import BadRequest, Forbidden, NotFound
from routerd.core.serena_access import (
    PathStat,
    WorkspaceSpec,
    find_workspace,
    may_read,
    may_use,
    may_write,
    path_flavor,
    relative_path,
    unlisted_problem,
)

from .osdeps import home_of, user_groups

__all__ = ["Client", "Resolved", "resolve_workspace"]


class Client(msgspec.Struct, frozen=True):
    """Who is asking: the peer's credentials (``uid`` None: unknown, always refused)."""

    uid: int | None
    gid: int | None = None
    groups: tuple[int, ...] = ()


class Resolved(msgspec.Struct, frozen=True):
    spec: WorkspaceSpec
    file: str | None  # relative to spec.path
    writer: bool  # this client may use the writing tools here


def resolve_workspace(client: Client, workspace: str | None, file: str | None, *,
                      config: SerenaConfig, configured: Mapping[str, WorkspaceSpec],
                      platform: str = sys.platform) -> Resolved:
    """The workspace and file a request means, after checking ``client`` may read them.

    ``configured`` maps the configured workspaces' resolved paths to their specs. On
    ``platform`` ``"win32"`` the client is the daemon's own user and paths follow Windows rules
    (see the module docstring).
    Blocking (file-system calls): run it in a worker thread. Raises NotFound, Forbidden or
    BadRequest (the message says what to do).
    """
    if client.uid is None:
        raise Forbidden("routerd cannot tell who is asking (no peer credentials), so it "
                        "will not read a workspace for you")
    base = workspace or (file if file and os.path.isabs(file) else None) or config.workspace
    if base is None:
        if len(configured) == 1:
            base = next(iter(configured))
        else:
            raise BadRequest("name a workspace (a directory of the project)")
    if not os.path.isabs(base):
        raise BadRequest(f"the workspace must be an absolute path, not {base!r}")
    real = os.path.realpath(base)
    if not os.path.exists(real):
        raise NotFound(f"{base} does not exist")
    flavor = path_flavor(platform)
    root = find_workspace(real, configured, flavor=flavor)
    if root is not None:
        spec = configured[root]
    elif not config.unlisted_workspaces:
        raise Forbidden(f"{base} is not in a configured Serena workspace "
                        "(serena.unlisted_workspaces is false)")
    else:
        spec = WorkspaceSpec(path=_project_root(real), languages=tuple(config.languages))
        problem = unlisted_problem(spec.path, _home(client.uid, platform), flavor=flavor)
        if problem is not None:
            raise Forbidden(problem)
    if not may_use(spec, client.uid):
        raise Forbidden(f"uid {client.uid} may not use the Serena workspace {spec.path}")
    uid = client.uid
    if platform == "win32":
        who, readable, owner = "routerd", _self_may_read, uid
    else:
        groups = _groups_of(client)
        chain = _stat_chain(spec.path)
        who, owner = f"uid {uid}", chain[-1].uid

        def readable(path: str) -> bool:
            return may_read(chain if path == spec.path else _stat_chain(path), uid, groups)

    if not readable(spec.path):
        raise Forbidden(f"{who} cannot read {spec.path}")
    rel = None
    if file is not None:
        full = os.path.realpath(file if os.path.isabs(file) else os.path.join(spec.path,
                                                                               file))
        rel = relative_path(spec.path, full, flavor=flavor)
        if rel is None or rel == ".":
            raise Forbidden(f"{file} is not a file inside the workspace {spec.path}")
        if not os.path.exists(full):
            raise NotFound(f"{file} does not exist")
        if not readable(full):
            raise Forbidden(f"{who} cannot read {file}")
    writer = may_write(spec, uid, owner_uid=owner)
    return Resolved(spec=spec, file=rel, writer=writer)


# --- file-system helpers -----------------------------------------------------------------------


def _project_root(path: str) -> str:
    """The nearest directory at or above ``path`` holding ``.git``; else ``path``'s directory."""
    start = path if os.path.isdir(path) else os.path.dirname(path)
    d = start
    while True:
        if os.path.exists(os.path.join(d, ".git")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return start
        d = parent


def _home(uid: int, platform: str) -> str | None:
    """``uid``'s home directory; on Windows the daemon's own (every client is its user), from
    ``USERPROFILE`` (else ``HOMEDRIVE``/``HOMEPATH``; elsewhere ``HOME``)."""
    if platform == "win32":
        home = os.path.expanduser("~")
        return None if home == "~" else home
    return home_of(uid)


def _stat_chain(path: str) -> list[PathStat]:
    """``os.stat`` of ``/`` and of every directory down to ``path`` (resolved), ``path`` last."""
    parts = [p for p in path.split("/") if p]
    out = []
    current = "/"
    for i in range(len(parts) + 1):
        if i:
            current = posixpath.join(current, parts[i - 1])
        st = os.stat(current)
        out.append(PathStat(mode=stat.S_IMODE(st.st_mode) | stat.S_IFMT(st.st_mode),
                            uid=st.st_uid, gid=st.st_gid))
    return out


def _self_may_read(path: str) -> bool:
    """Whether the daemon itself can read ``path`` (list it, for a directory): tried, since on
    Windows its ACL decides, which neither mode bits nor ``os.access`` show."""
    try:
        if os.path.isdir(path):
            with os.scandir(path):
                pass
        else:
            with open(path, "rb"):
                pass
    except OSError:
        return False
    return True


def _groups_of(client: Client) -> set[int]:
    groups = set(client.groups)
    if client.gid is not None:
        groups.add(client.gid)
    if not client.groups and client.uid is not None:
        groups.update(user_groups(client.uid, client.gid))
    return groups
