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
* Pure: file modes and ids are values passed in; nothing here reads the file system.
"""

from __future__ import annotations

import posixpath
import stat as _stat
from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from routerd_client.protocol_serena import ProposedEdit

__all__ = [
    "ALL_KNOWN_TOOLS",
    "EDIT_KINDS",
    "NEVER_TOOLS",
    "READ_TOOLS",
    "WRITE_TOOLS",
    "EditError",
    "PathStat",
    "ProposedEdit",
    "WorkspaceSpec",
    "edit_call",
    "find_workspace",
    "may_read",
    "may_use",
    "may_write",
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


def find_workspace(path: str, roots: Iterable[str]) -> str | None:
    """The innermost of ``roots`` that contains ``path`` (both absolute and normalised)."""
    best: str | None = None
    for root in roots:
        if _inside(path, root) and (best is None or len(root) > len(best)):
            best = root
    return best


def _inside(path: str, root: str) -> bool:
    if root == "/":
        return path.startswith("/")
    return path == root or path.startswith(root.rstrip("/") + "/")


def unlisted_problem(path: str, home: str | None) -> str | None:
    """Why ``path`` may not be an unlisted (client-named) workspace, or None if it may.

    Serena indexes and searches its whole workspace: ``/``, a directory right below it, or a
    home directory itself would make it crawl far more than a project (and start slowly).
    """
    norm = posixpath.normpath(path)
    if norm.count("/") < 2 and norm != "/":
        return f"{norm} is too close to / to be a project; name the project's own directory"
    if norm == "/":
        return "/ is not a project; name the project's own directory"
    if home is not None and norm == posixpath.normpath(home):
        return f"{norm} is a home directory, not a project; name the project's own directory"
    return None


def relative_path(root: str, path: str) -> str | None:
    """``path`` relative to workspace ``root`` (``"."`` for the root itself), or None when it
    is outside. A relative ``path`` is taken relative to ``root``. Both are normalised first;
    symbolic links must already be resolved by the caller."""
    root = posixpath.normpath(root)
    full = posixpath.normpath(path if posixpath.isabs(path) else posixpath.join(root, path))
    if not _inside(full, root):
        return None
    return posixpath.relpath(full, root)


# --- proposed edits -----------------------------------------------------------------------------

EDIT_KINDS: Final = ("replace_symbol_body", "insert_after_symbol", "insert_before_symbol",
                     "rename_symbol")


class EditError(ValueError):
    """The edit is incomplete or names a path outside the workspace."""


def edit_call(edit: ProposedEdit, root: str) -> tuple[str, dict[str, Any]]:
    """The Serena tool call that applies ``edit`` in workspace ``root``: ``(tool, arguments)``.

    Raises :class:`EditError` for a missing body or new name, an empty symbol, or a file
    outside the workspace.
    """
    rel = relative_path(root, edit.file)
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
