"""Who may do what with a warm Serena: tool allow-lists, workspace access, proposed edits.

Serena's tool set includes ``execute_shell_command`` and file writers, and routerd runs Serena
with the daemon's privileges on behalf of clients with their own. So:

Invariants:

* A client only ever sees and calls tools on an allow-list: :data:`READ_TOOLS` by default;
  :data:`WRITE_TOOLS` only in a workspace configured writable, and only for a uid allowed to
  write there. :data:`NEVER_TOOLS` are never offered, whatever the configuration says.
* Serena itself is started with every known tool outside the workspace's allow-list excluded
  (:func:`serena_exclusions`), so a routerd bug cannot reach them either.
* A client may use a workspace only if its uid can read the workspace root (and, for a file,
  that file): :func:`may_read` applies the classic owner/group/other permission bits to the
  chain of directories, as the kernel would for that uid. No confused deputy.
* Paths a client names are confined to the workspace: :func:`relative_path` returns None for
  anything outside it (``..``, another root).
* Paths follow the rules of a :data:`PathFlavor` passed in (the daemon's platform, never the
  host running this code): ``"posix"`` (``/``, case-sensitive) or ``"windows"`` (``\\`` and
  ``/``, case-insensitive, drive letters and UNC shares; a drive-relative ``C:foo`` is never
  inside a workspace). ``posixpath`` and ``ntpath`` are used explicitly, never ``os.path``.
* Pure: file modes and ids are values passed in; nothing here reads the file system.
"""

from __future__ import annotations

import ntpath
import posixpath
import stat as _stat
from collections.abc import Iterable, Sequence
from typing import Any, Final, Literal

import msgspec

from routerd_client.protocol_serena import ProposedEdit

__all__ = [
    "ALL_KNOWN_TOOLS",
    "EDIT_KINDS",
    "NEVER_TOOLS",
    "READ_TOOLS",
    "WRITE_TOOLS",
    "EditError",
    "PathFlavor",
    "PathStat",
    "ProposedEdit",
    "WorkspaceSpec",
    "edit_call",
    "find_workspace",
    "may_read",
    "may_use",
    "may_write",
    "path_flavor",
    "relative_path",
    "serena_exclusions",
    "tools_for",
    "unlisted_problem",
]

#: Serena 2.1's tools that only read the project (its own ``read_only_hint``), minus those
#: that change Serena's state (``activate_project``) or reveal its configuration.
READ_TOOLS: Final = (
    "find_symbol",
    "find_referencing_symbols",
    "find_implementations",
    "find_declaration",
    "get_symbols_overview",
    "get_diagnostics_for_file",
    "get_diagnostics_for_symbol",
    "read_file",
    "list_dir",
    "find_file",
    "search_for_pattern",
)

#: Tools that change the user's files: offered only where a workspace is writable.
WRITE_TOOLS: Final = (
    "replace_symbol_body",
    "insert_after_symbol",
    "insert_before_symbol",
    "rename_symbol",
    "safe_delete_symbol",
    "replace_content",
    "replace_in_files",
    "create_text_file",
    "delete_lines",
    "replace_lines",
    "insert_at_line",
)

#: Never offered: a shell, project switching and querying other projects, Serena's memories
#: (files it writes), its configuration, dashboard and onboarding, the REPL interface, and the
#: JetBrains-backend tools (routerd runs the LSP backend).
NEVER_TOOLS: Final = (
    "execute_shell_command",
    "activate_project",
    "remove_project",
    "list_queryable_projects",
    "query_project",
    "get_current_config",
    "serena_info",
    "onboarding",
    "initial_instructions",
    "open_dashboard",
    "restart_language_server",
    "serena_repl",
    "write_memory",
    "read_memory",
    "list_memories",
    "delete_memory",
    "rename_memory",
    "edit_memory",
    "jet_brains_debug",
    "jet_brains_find_declaration",
    "jet_brains_find_implementations",
    "jet_brains_find_referencing_symbols",
    "jet_brains_find_symbol",
    "jet_brains_get_symbols_overview",
    "jet_brains_inline_symbol",
    "jet_brains_list_inspections",
    "jet_brains_move",
    "jet_brains_rename",
    "jet_brains_run_inspections",
    "jet_brains_safe_delete",
    "jet_brains_type_hierarchy",
)

#: Every tool name Serena 2.1 registers. Serena refuses to start when ``excluded_tools``
#: names a tool it does not know, so exclusions are drawn from this set only.
ALL_KNOWN_TOOLS: Final = frozenset((*READ_TOOLS, *WRITE_TOOLS, *NEVER_TOOLS))


class WorkspaceSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One workspace as the pool sees it. ``path`` is absolute and resolved (no symlinks)."""

    path: str
    configured: bool = False  # listed in the configuration (else named by a client)
    start: bool = False  # start with the daemon
    writable: bool = False
    write_uids: tuple[int, ...] = ()  # empty: the owner of the workspace root
    uids: tuple[int, ...] = ()  # empty: any uid that can read the workspace
    languages: tuple[str, ...] = ()


def tools_for(
    spec: WorkspaceSpec,
    *,
    read_tools: Iterable[str],
    write_tools: Iterable[str],
    writer: bool,
) -> frozenset[str]:
    """The tools a client may list and call in ``spec``: the configured read tools, plus the
    configured write tools if the workspace is writable and the client is a ``writer``
    (see :func:`may_write`). :data:`NEVER_TOOLS` are always removed."""
    allowed = set(read_tools)
    if spec.writable and writer:
        allowed.update(write_tools)
    return frozenset(allowed - set(NEVER_TOOLS))


def serena_exclusions(spec: WorkspaceSpec, *, read_tools: Iterable[str],
                      write_tools: Iterable[str]) -> list[str]:
    """Serena's ``excluded_tools`` for ``spec``: every known tool no client can be given."""
    reachable = tools_for(spec, read_tools=read_tools, write_tools=write_tools, writer=True)
    return sorted(ALL_KNOWN_TOOLS - reachable)


# --- file-system permissions --------------------------------------------------------------------


class PathStat(msgspec.Struct, frozen=True):
    """What ``os.stat`` said about one path: mode bits and owner."""

    mode: int
    uid: int
    gid: int

    @property
    def is_dir(self) -> bool:
        return _stat.S_ISDIR(self.mode)


_R, _W, _X = 4, 2, 1


def _allowed(st: PathStat, uid: int, gids: frozenset[int], want: int) -> bool:
    if uid == 0:
        # root reads and searches everything; it executes only what someone may execute.
        return not (want & _X) or st.is_dir or bool(st.mode & 0o111)
    if st.uid == uid:
        bits = (st.mode >> 6) & 7
    elif st.gid in gids:
        bits = (st.mode >> 3) & 7
    else:
        bits = st.mode & 7
    return bits & want == want


def may_read(chain: Sequence[PathStat], uid: int, gids: Iterable[int]) -> bool:
    """Whether ``uid`` (with groups ``gids``) can reach and read the last path of ``chain``.

    ``chain`` is the stat of every directory from the root ``/`` down to the target, the
    target last. Every directory on the way needs search (x) permission; the target needs read
    (r), and search too if it is a directory. An empty chain is never readable.
    """
    if not chain:
        return False
    groups = frozenset(gids)
    *dirs, target = chain
    if not all(d.is_dir and _allowed(d, uid, groups, _X) for d in dirs):
        return False
    want = _R | _X if target.is_dir else _R
    return _allowed(target, uid, groups, want)


def may_use(spec: WorkspaceSpec, uid: int) -> bool:
    """Whether ``spec``'s uid list admits ``uid`` (reading rights are checked separately)."""
    return not spec.uids or uid in spec.uids or uid == 0


def may_write(spec: WorkspaceSpec, uid: int, owner_uid: int) -> bool:
    """Whether ``uid`` may have Serena change files in ``spec``: the workspace must be writable
    and ``uid`` listed in ``write_uids`` (when empty: ``uid`` owns the workspace root)."""
    if not spec.writable:
        return False
    if spec.write_uids:
        return uid in spec.write_uids
    return uid == owner_uid


# --- paths inside a workspace -------------------------------------------------------------------

#: Whose path rules apply: the daemon's platform (see :func:`path_flavor`).
PathFlavor = Literal["posix", "windows"]


def path_flavor(platform: str) -> PathFlavor:
    """The path rules of ``platform``, a ``sys.platform`` value: ``"windows"`` for ``win32``."""
    return "windows" if platform == "win32" else "posix"


def find_workspace(path: str, roots: Iterable[str], *,
                   flavor: PathFlavor = "posix") -> str | None:
    """The innermost of ``roots`` that contains ``path`` (both absolute and normalised), as
    spelt in ``roots``. On Windows the comparison ignores case and the kind of separator."""
    if flavor == "windows":
        return _win_find_workspace(path, roots)
    best: str | None = None
    for root in roots:
        if _inside(path, root) and (best is None or len(root) > len(best)):
            best = root
    return best


def _inside(path: str, root: str) -> bool:
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root.rstrip("/") + "/")


def unlisted_problem(path: str, home: str | None, *,
                     flavor: PathFlavor = "posix") -> str | None:
    """Why ``path`` may not be an unlisted (client-named) workspace, or None if it may.

    Serena indexes and searches its whole workspace: ``/``, a directory right below it, or a
    home directory itself would make it crawl far more than a project (and start slowly). On
    Windows the roots are a drive's (``C:\\``) and a UNC share's (``\\\\server\\share``), so
    ``C:\\``, ``C:\\Users`` and the home directory are refused, and so is a path that is not
    absolute.
    """
    if flavor == "windows":
        return _win_unlisted_problem(path, home)
    norm = posixpath.normpath(path)
    if norm.count("/") < 2 and norm != "/":
        return f"{norm} is too close to / to be a project; name the project's own directory"
    if norm == "/":
        return "/ is not a project; name the project's own directory"
    if home is not None and norm == posixpath.normpath(home):
        return f"{norm} is a home directory, not a project; name the project's own directory"
    return None


def relative_path(root: str, path: str, *, flavor: PathFlavor = "posix") -> str | None:
    """``path`` relative to workspace ``root`` (``"."`` for the root itself), or None when it
    is outside. A relative ``path`` is taken relative to ``root``. Both are normalised first;
    symbolic links must already be resolved by the caller.

    On Windows (``flavor="windows"``): case is ignored and both separators count; the answer
    uses ``\\``. A path starting at a root without a drive (``\\src\\a.py``) is on ``root``'s
    drive, as Windows itself would join it. None as well for a drive-relative path
    (``C:foo``: relative to a current directory of that drive, unknown here), a device path
    (``\\\\?\\``, ``\\\\.\\``: not normalised by Windows), a name Windows would trim (a
    component ending in ``.`` or a space: ``.. `` is not ``..`` here, but may be there) and an
    answer that would start with a drive once joined again (``.\\C:``).
    """
    if flavor == "windows":
        return _win_relative_path(root, path)
    root = posixpath.normpath(root)
    full = posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(root, path))
    if not _inside(full, root):
        return None
    return posixpath.relpath(full, root)


# Windows rules, with ntpath (host-independent except normcase, which lower-cases on every
# host; Windows compares names case-insensitively too).

_SEPS: Final = ("\\", "/")
_DEVICE_PREFIXES: Final = ("\\\\?\\", "\\\\.\\")


class _WinPath(msgspec.Struct, frozen=True):
    """A normalised Windows path: ``drive`` ``C:`` or ``\\\\server\\share`` (or empty),
    whether it starts at that drive's root, and its components as written."""

    drive: str
    rooted: bool
    parts: tuple[str, ...]

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """What two spellings of one path share: drive and components, case folded."""
        return ntpath.normcase(self.drive), tuple(ntpath.normcase(p) for p in self.parts)

    @property
    def top(self) -> str:
        """The root this path starts from, as written: ``C:\\``, ``\\\\server\\share\\``."""
        return self.drive + "\\"


def _win_split(path: str) -> _WinPath:
    drive, rest = ntpath.splitdrive(ntpath.normpath(path))
    # A UNC share (\\server\share) is absolute even with nothing after it.
    rooted = rest.startswith(_SEPS) or (drive.startswith(_SEPS) and not rest)
    return _WinPath(drive, rooted, tuple(p for p in rest.split("\\") if p and p != "."))


def _win_depth_inside(path: _WinPath, root: _WinPath) -> int | None:
    """How many components ``root`` has if it contains ``path`` (both rooted), else None."""
    if not (path.rooted and root.rooted):
        return None
    (pdrive, pparts), (rdrive, rparts) = path.key, root.key
    if pdrive != rdrive or pparts[: len(rparts)] != rparts:
        return None
    return len(rparts)


def _win_find_workspace(path: str, roots: Iterable[str]) -> str | None:
    target = _win_split(path)
    best: tuple[int, str] | None = None
    for root in roots:
        depth = _win_depth_inside(target, _win_split(root))
        if depth is not None and (best is None or depth > best[0]):
            best = (depth, root)
    return None if best is None else best[1]


def _win_unlisted_problem(path: str, home: str | None) -> str | None:
    p = _win_split(path)
    norm = ntpath.normpath(path)
    if not p.rooted:
        return f"{norm} is not an absolute path; name the project's own directory"
    if not p.parts:
        return f"{p.top} is not a project; name the project's own directory"
    if len(p.parts) < 2:
        return (f"{norm} is too close to {p.top} to be a project; name the project's own "
                "directory")
    if home is not None and p.key == _win_split(home).key:
        return f"{norm} is a home directory, not a project; name the project's own directory"
    return None


def _win_relative_path(root: str, path: str) -> str | None:
    base = _win_split(root)
    drive, rest = ntpath.splitdrive(path)
    if drive and not rest.startswith(_SEPS) and not drive.startswith(_SEPS):
        return None  # C:foo
    if drive[:4].replace("/", "\\") in _DEVICE_PREFIXES:
        return None  # Windows does not normalise \\?\ paths: ".." would be taken as written
    if drive:
        full = path
    elif rest.startswith(_SEPS):
        full = base.drive + path
    else:
        full = f"{root}\\{path}"
    target = _win_split(full)
    depth = _win_depth_inside(target, base)
    if depth is None:
        return None
    inner = target.parts[depth:]
    if any(p.endswith((".", " ")) for p in inner):
        return None
    if inner and ntpath.splitdrive(inner[0])[0]:
        return None  # "C:" or "C:x" first: a drive (relative to its own directory) once joined
    return "\\".join(inner) or "."


# --- proposed edits -----------------------------------------------------------------------------

EDIT_KINDS: Final = ("replace_symbol_body", "insert_after_symbol", "insert_before_symbol",
                     "rename_symbol")


class EditError(ValueError):
    """The edit is incomplete or names a path outside the workspace."""


def edit_call(edit: ProposedEdit, root: str, *,
              flavor: PathFlavor = "posix") -> tuple[str, dict[str, Any]]:
    """The Serena tool call that applies ``edit`` in workspace ``root``: ``(tool, arguments)``,
    the file relative to ``root`` by ``flavor``'s rules (:func:`relative_path`).

    Raises :class:`EditError` for a missing body or new name, an empty symbol, or a file
    outside the workspace.
    """
    rel = relative_path(root, edit.file, flavor=flavor)
    if rel is None or rel == ".":
        raise EditError(f"{edit.file} is not a file inside the workspace {root}")
    if not edit.symbol.strip():
        raise EditError("the edit names no symbol")
    args: dict[str, Any] = {"name_path": edit.symbol, "relative_path": rel}
    if edit.kind == "rename_symbol":
        if not edit.new_name:
            raise EditError("rename_symbol needs new_name")
        args["new_name"] = edit.new_name
    else:
        if edit.body is None:
            raise EditError(f"{edit.kind} needs body")
        args["body"] = edit.body
    return edit.kind, args
