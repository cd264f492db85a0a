"""Who may do what with Serena: allow-lists, file permissions, confinement, proposed edits."""

from __future__ import annotations

import posixpath
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.serena_access import (
    ALL_KNOWN_TOOLS,
    NEVER_TOOLS,
    READ_TOOLS,
    WRITE_TOOLS,
    EditError,
    PathStat,
    ProposedEdit,
    WorkspaceSpec,
    edit_call,
    find_workspace,
    may_read,
    may_use,
    may_write,
    relative_path,
    serena_exclusions,
    tools_for,
    unlisted_problem,
)

#: ``ToolRegistry().get_tool_names()`` of serena-agent 2.1.0. Serena refuses to start when
#: ``excluded_tools`` names a tool it does not know, so our sets must be exactly these.
SERENA_2_1_TOOLS = {
    "activate_project", "create_text_file", "delete_lines", "delete_memory", "edit_memory",
    "execute_shell_command", "find_declaration", "find_file", "find_implementations",
    "find_referencing_symbols", "find_symbol", "get_current_config", "get_diagnostics_for_file",
    "get_diagnostics_for_symbol", "get_symbols_overview", "initial_instructions",
    "insert_after_symbol", "insert_at_line", "insert_before_symbol", "jet_brains_debug",
    "jet_brains_find_declaration", "jet_brains_find_implementations",
    "jet_brains_find_referencing_symbols", "jet_brains_find_symbol",
    "jet_brains_get_symbols_overview", "jet_brains_inline_symbol", "jet_brains_list_inspections",
    "jet_brains_move", "jet_brains_rename", "jet_brains_run_inspections",
    "jet_brains_safe_delete", "jet_brains_type_hierarchy", "list_dir", "list_memories",
    "list_queryable_projects", "onboarding", "open_dashboard", "query_project", "read_file",
    "read_memory", "remove_project", "rename_memory", "rename_symbol", "replace_content",
    "replace_in_files", "replace_lines", "replace_symbol_body", "restart_language_server",
    "safe_delete_symbol", "search_for_pattern", "serena_info", "serena_repl", "write_memory",
}  # fmt: skip


def test_tool_sets_partition_serenas_registry() -> None:
    sets = [set(READ_TOOLS), set(WRITE_TOOLS), set(NEVER_TOOLS)]
    assert sum(len(s) for s in sets) == len(ALL_KNOWN_TOOLS)  # disjoint
    assert ALL_KNOWN_TOOLS == SERENA_2_1_TOOLS


RO = WorkspaceSpec(path="/w")
RW = WorkspaceSpec(path="/w", writable=True)


def test_read_only_by_default_and_never_the_shell() -> None:
    reads, writes = READ_TOOLS, WRITE_TOOLS
    assert tools_for(RO, read_tools=reads, write_tools=writes, writer=True) == set(reads)
    assert tools_for(RW, read_tools=reads, write_tools=writes, writer=False) == set(reads)
    both = tools_for(RW, read_tools=reads, write_tools=writes, writer=True)
    assert both == set(reads) | set(writes)
    sneaky = tools_for(RW, read_tools=[*reads, "execute_shell_command"],
                       write_tools=["activate_project"], writer=True)
    assert not sneaky & set(NEVER_TOOLS)


def test_serena_side_exclusions_are_known_names_outside_the_allow_list() -> None:
    excluded = set(serena_exclusions(RO, read_tools=READ_TOOLS, write_tools=WRITE_TOOLS))
    assert excluded == ALL_KNOWN_TOOLS - set(READ_TOOLS)
    assert "execute_shell_command" in excluded and "replace_symbol_body" in excluded
    rw = set(serena_exclusions(RW, read_tools=["find_symbol", "future_tool"],
                               write_tools=["rename_symbol"]))
    assert "rename_symbol" not in rw and "read_file" in rw
    assert "future_tool" not in rw  # unknown names would stop Serena from starting


# --- permissions --------------------------------------------------------------------------------

ROOT = PathStat(mode=stat.S_IFDIR | 0o755, uid=0, gid=0)
HOME = PathStat(mode=stat.S_IFDIR | 0o750, uid=1000, gid=1000)
PROJ = PathStat(mode=stat.S_IFDIR | 0o755, uid=1000, gid=1000)
SECRET = PathStat(mode=stat.S_IFREG | 0o600, uid=1000, gid=1000)
SHARED = PathStat(mode=stat.S_IFREG | 0o640, uid=1000, gid=50)


@pytest.mark.parametrize(("chain", "uid", "gids", "ok"), [
    ([ROOT, HOME, PROJ], 1000, [1000], True),  # the owner
    ([ROOT, HOME, PROJ], 1001, [1000], True),  # home's group may search it
    ([ROOT, HOME, PROJ], 1001, [100], False),  # others may not pass home (0750)
    ([ROOT, HOME, PROJ], 0, [], True),  # root
    ([ROOT, PROJ, SECRET], 1001, [1000], False),  # 0600 file of someone else
    ([ROOT, PROJ, SECRET], 1000, [], True),
    ([ROOT, PROJ, SHARED], 1001, [50], True),  # group read
    ([ROOT, PROJ, SHARED], 1001, [51], False),
    ([ROOT, SECRET, PROJ], 1000, [1000], False),  # a file on the way is no directory
    ([], 0, [], False),
])
def test_may_read(chain: list[PathStat], uid: int, gids: list[int], ok: bool) -> None:
    assert may_read(chain, uid, gids) is ok


def test_owner_bits_decide_for_the_owner_even_when_others_may() -> None:
    odd = PathStat(mode=stat.S_IFREG | 0o044, uid=1000, gid=1000)
    assert not may_read([ROOT, odd], 1000, [1000])  # the kernel's rule: owner bits only
    assert may_read([ROOT, odd], 1001, [7])


def test_who_may_write_and_use() -> None:
    assert not may_write(RO, 1000, owner_uid=1000)
    assert may_write(RW, 1000, owner_uid=1000) and not may_write(RW, 1001, owner_uid=1000)
    listed = WorkspaceSpec(path="/w", writable=True, write_uids=(1001,))
    assert may_write(listed, 1001, owner_uid=1000) and not may_write(listed, 1000, 1000)
    only = WorkspaceSpec(path="/w", uids=(1000,))
    assert may_use(only, 1000) and may_use(only, 0) and not may_use(only, 1001)
    assert may_use(RO, 4242)


# --- paths --------------------------------------------------------------------------------------


def test_relative_paths_stay_inside() -> None:
    assert relative_path("/w", "a/b.py") == "a/b.py"
    assert relative_path("/w", "/w/a/../b.py") == "b.py"
    assert relative_path("/w", "/w") == "."
    assert relative_path("/w", "../etc/passwd") is None
    assert relative_path("/w", "/etc/passwd") is None
    assert relative_path("/w", "/wx/a.py") is None
    assert relative_path("/", "/etc") == "etc"


@given(st.lists(st.sampled_from(["a", "..", ".", "b", "/", "w", "x.py"]), max_size=8))
def test_relative_path_never_escapes(parts: list[str]) -> None:
    rel = relative_path("/w", "/".join(parts))
    if rel is not None:
        assert posixpath.normpath(posixpath.join("/w", rel)).startswith("/w")
        assert not rel.startswith("..")


def test_unlisted_workspaces_must_look_like_projects() -> None:
    assert unlisted_problem("/", None) is not None
    assert unlisted_problem("/home", None) is not None
    assert unlisted_problem("/home/alice", "/home/alice/") is not None
    assert unlisted_problem("/home/alice/src/p", "/home/alice") is None
    assert unlisted_problem("/srv/p", None) is None


def test_find_workspace_takes_the_innermost() -> None:
    roots = ["/src", "/src/inner", "/srcx"]
    assert find_workspace("/src/inner/a.py", roots) == "/src/inner"
    assert find_workspace("/src/a.py", roots) == "/src"
    assert find_workspace("/srcx", roots) == "/srcx"
    assert find_workspace("/other", roots) is None


# --- proposed edits -----------------------------------------------------------------------------


def test_edits_become_symbol_level_tool_calls() -> None:
    body = ProposedEdit(kind="replace_symbol_body", file="/w/geo/shapes.py",
                        symbol="Circle/area", body="def area(self): ...")
    assert edit_call(body, "/w") == ("replace_symbol_body", {
        "name_path": "Circle/area", "relative_path": "geo/shapes.py",
        "body": "def area(self): ..."})
    ren = ProposedEdit(kind="rename_symbol", file="geo/shapes.py", symbol="Circle",
                       new_name="Disc")
    assert edit_call(ren, "/w")[1]["new_name"] == "Disc"


@pytest.mark.parametrize("edit", [
    ProposedEdit(kind="rename_symbol", file="a.py", symbol="X"),
    ProposedEdit(kind="insert_after_symbol", file="a.py", symbol="X"),
    ProposedEdit(kind="replace_symbol_body", file="a.py", symbol=" ", body="x"),
    ProposedEdit(kind="replace_symbol_body", file="../a.py", symbol="X", body="x"),
    ProposedEdit(kind="replace_symbol_body", file="/w", symbol="X", body="x"),
])
def test_incomplete_or_escaping_edits_are_refused(edit: ProposedEdit) -> None:
    with pytest.raises(EditError):
        edit_call(edit, "/w")
