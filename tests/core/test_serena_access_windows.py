"""Serena's workspace and path rules with Windows paths (``flavor="windows"``), on any host:
drives, UNC shares, both separators, case-insensitive names, drive-relative paths refused."""

from __future__ import annotations

import ntpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routerd.core.serena_access import (
    EditError,
    ProposedEdit,
    edit_call,
    find_workspace,
    path_flavor,
    relative_path,
    unlisted_problem,
)

W = "windows"


def test_the_platform_picks_the_flavor() -> None:
    assert path_flavor("win32") == "windows"
    assert path_flavor("linux") == path_flavor("darwin") == "posix"


# --- relative_path ------------------------------------------------------------------------------


@pytest.mark.parametrize(("root", "path", "rel"), [
    ("C:\\proj", "C:\\proj\\a.py", "a.py"),  # was the whole C:\proj\a.py
    ("C:\\proj", "C:\\proj", "."),
    ("C:\\proj", "C:\\proj\\", "."),
    ("C:\\proj", "", "."),
    ("C:\\proj", "src\\a.py", "src\\a.py"),
    ("C:\\proj", "src/a.py", "src\\a.py"),  # either separator; the answer uses \
    ("C:\\proj", "c:/PROJ/Src/A.py", "Src\\A.py"),  # case-insensitive, case kept
    ("C:\\Proj", "c:\\proj\\a.py", "a.py"),
    ("C:\\proj", "C:\\proj\\src\\..\\a.py", "a.py"),
    ("C:\\proj", ".\\a.py", "a.py"),
    ("C:\\proj", "\\proj\\a.py", "a.py"),  # rooted without a drive: the workspace's drive
    ("C:\\", "C:\\Windows", "Windows"),
    ("C:\\proj", "a.py:Zone.Identifier", "a.py:Zone.Identifier"),  # a stream, not a drive
    ("\\\\srv\\share\\p", "\\\\SRV\\Share\\p\\x.py", "x.py"),
    ("\\\\srv\\share\\p", "//srv/share/p/x.py", "x.py"),
    ("\\\\srv\\share", "\\\\srv\\share\\p", "p"),
    ("\\\\srv\\share\\p", "\\p\\x.py", "x.py"),
    ("\\\\?\\C:\\proj", "a.py", "a.py"),
])
def test_paths_inside_the_workspace(root: str, path: str, rel: str) -> None:
    assert relative_path(root, path, flavor=W) == rel


@pytest.mark.parametrize(("root", "path"), [
    ("C:\\proj", "..\\secret.txt"),
    ("C:\\proj", "../secret.txt"),
    ("C:\\proj", "src\\..\\..\\secret.txt"),
    ("C:\\proj", "C:\\proj\\..\\secret.txt"),
    ("C:\\proj", "C:\\projx\\a.py"),  # a sibling sharing the prefix
    ("C:\\proj", "C:\\"),
    ("C:\\proj", "D:\\proj\\a.py"),  # another drive
    ("C:\\proj", "C:foo"),  # drive-relative: relative to C:'s current directory
    ("C:\\proj", "c:foo"),
    ("C:\\proj", "C:"),
    ("C:\\proj", "D:foo"),
    ("C:\\proj", "a:b.py"),  # a one-letter name and a colon: drive A:
    ("C:\\proj", "\\other\\a.py"),  # the workspace's drive, another directory
    ("C:\\proj", "\\\\srv\\share\\proj\\a.py"),
    ("C:\\proj", "\\\\?\\C:\\proj\\a.py"),  # device paths are never taken apart here
    ("C:\\proj", "\\\\.\\C:\\proj\\a.py"),
    ("C:\\proj", "//?/C:/proj/a.py"),
    ("\\\\?\\C:\\proj", "\\\\?\\C:\\proj\\a.py"),  # even in a workspace named so
    ("C:\\proj", "src\\.. "),  # Windows trims trailing dots and spaces: unknowable here
    ("C:\\proj", "src\\a.py."),
    ("\\\\srv\\share\\p", "\\\\srv\\other\\p\\x.py"),  # another share
    ("\\\\srv\\share\\p", "\\\\srv2\\share\\p\\x.py"),  # another server
    ("\\\\srv\\share\\p", "C:\\p\\x.py"),
    ("proj", "proj\\a.py"),  # a workspace that is not absolute contains nothing
])
def test_paths_outside_the_workspace(root: str, path: str) -> None:
    assert relative_path(root, path, flavor=W) is None


def test_an_answer_that_would_be_a_drive_once_joined_is_refused() -> None:
    """``.\\C:`` normalises to ``C:``, which joined to the workspace again is the drive C:
    (found by the property test below); a stream of a file inside stays inside."""
    assert relative_path("C:\\proj", ".\\C:", flavor=W) is None
    assert relative_path("C:\\proj", ".\\D:x.py", flavor=W) is None
    assert relative_path("C:\\proj", "src\\a.py:hidden", flavor=W) == "src\\a.py:hidden"


def test_posix_rules_are_unchanged() -> None:
    # A backslash is part of a name on POSIX, and only / separates.
    assert relative_path("/w", "..\\x") == "..\\x"
    assert relative_path("/w", "C:foo") == "C:foo"
    # So a Windows path is one relative name there (what Windows got before the flavours).
    assert relative_path("C:\\proj", "C:\\proj\\a.py") == "C:\\proj\\a.py"
    assert relative_path("/W", "/w/a.py") is None


_PIECES = ["a", "B", "..", ".", "\\", "/", "C:", "c:", "D:", "proj", "PROJ", ".. ", "x.py",
           "\\\\srv\\share"]


@given(st.lists(st.sampled_from(_PIECES), max_size=8))
def test_relative_path_never_escapes(pieces: list[str]) -> None:
    path = "".join(pieces)
    rel = relative_path("C:\\proj", path, flavor=W)
    if rel is not None:
        parts = rel.split("\\")
        assert ".." not in parts and not ntpath.splitdrive(rel)[0]
        full = ntpath.normcase(ntpath.normpath(ntpath.join("C:\\proj", rel)))
        assert full == "c:\\proj" or full.startswith("c:\\proj\\")


# --- find_workspace -----------------------------------------------------------------------------


def test_a_subdirectory_is_found_in_its_workspace() -> None:
    roots = ["C:\\Users\\me\\proj", "C:\\Users\\me\\proj\\inner", "D:\\proj", "C:\\Users\\me\\p"]
    assert find_workspace("C:\\Users\\me\\proj\\src", roots, flavor=W) == "C:\\Users\\me\\proj"
    assert find_workspace("C:\\Users\\me\\proj", roots, flavor=W) == "C:\\Users\\me\\proj"
    assert find_workspace("C:\\Users\\me\\proj\\inner\\a.py", roots,
                          flavor=W) == "C:\\Users\\me\\proj\\inner"  # the innermost
    # Case and separators do not matter; the root comes back as configured.
    assert find_workspace("c:/users/ME/PROJ/src", roots, flavor=W) == "C:\\Users\\me\\proj"
    assert find_workspace("C:\\Users\\me\\projx", roots, flavor=W) is None
    assert find_workspace("E:\\proj\\src", roots, flavor=W) is None
    assert find_workspace("D:\\proj\\x", roots, flavor=W) == "D:\\proj"
    assert find_workspace("C:\\anything", ["C:\\"], flavor=W) == "C:\\"
    assert find_workspace("D:\\anything", ["C:\\"], flavor=W) is None


def test_unc_workspaces() -> None:
    roots = ["\\\\srv\\share\\team\\proj"]
    assert find_workspace("\\\\SRV\\share\\team\\proj\\src", roots, flavor=W) == roots[0]
    assert find_workspace("\\\\srv\\share2\\team\\proj\\src", roots, flavor=W) is None
    assert find_workspace("C:\\team\\proj\\src", roots, flavor=W) is None


def test_posix_find_workspace_is_unchanged() -> None:
    assert find_workspace("C:\\proj\\src", ["C:\\proj"]) is None  # \ is not a separator
    assert find_workspace("/Src/a", ["/src"]) is None  # case counts


# --- unlisted_problem ---------------------------------------------------------------------------

HOME = "C:\\Users\\me"


@pytest.mark.parametrize("path", [
    "C:\\Users\\me\\proj",  # was refused as "too close to /"
    "C:\\Users\\me\\src\\proj",
    "D:\\src\\proj",
    "\\\\srv\\share\\team\\proj",
    "C:/Users/me/proj",
])
def test_a_project_may_be_unlisted(path: str) -> None:
    assert unlisted_problem(path, HOME, flavor=W) is None


@pytest.mark.parametrize(("path", "why"), [
    ("C:\\", "C:\\ is not a project"),
    ("c:/", "c:\\ is not a project"),
    ("D:\\", "D:\\ is not a project"),
    ("\\\\srv\\share", "\\\\srv\\share\\ is not a project"),
    ("\\\\srv\\share\\", "\\\\srv\\share\\ is not a project"),
    ("C:\\Users", "C:\\Users is too close to C:\\ to be a project"),
    ("C:\\src", "C:\\src is too close to C:\\"),
    ("\\\\srv\\share\\team", "\\\\srv\\share\\team is too close to \\\\srv\\share\\"),
    ("C:\\Users\\me", "is a home directory"),
    ("c:\\users\\ME\\", "is a home directory"),  # case and a trailing separator
    ("C:/Users/me", "is a home directory"),
    ("proj", "not an absolute path"),
    ("C:proj\\x", "not an absolute path"),
])
def test_too_close_to_a_root_or_home(path: str, why: str) -> None:
    problem = unlisted_problem(path, HOME, flavor=W)
    assert problem is not None and why in problem
    assert "/" not in problem.split(" is ")[1]  # never "too close to /"


def test_home_unknown() -> None:
    assert unlisted_problem("C:\\Users\\me", None, flavor=W) is None
    assert unlisted_problem("C:\\Users", None, flavor=W) is not None


# --- edits --------------------------------------------------------------------------------------


def test_edits_name_files_relative_to_a_windows_workspace() -> None:
    edit = ProposedEdit(kind="replace_symbol_body", file="c:\\PROJ\\geo\\shapes.py",
                        symbol="Circle/area", body="...")
    assert edit_call(edit, "C:\\proj", flavor=W)[1]["relative_path"] == "geo\\shapes.py"
    ren = ProposedEdit(kind="rename_symbol", file="geo/shapes.py", symbol="Circle",
                       new_name="Disc")
    assert edit_call(ren, "C:\\proj", flavor=W)[1]["relative_path"] == "geo\\shapes.py"


@pytest.mark.parametrize("file", ["C:foo.py", "..\\a.py", "D:\\proj\\a.py", "C:\\proj",
                                  "\\\\srv\\share\\proj\\a.py"])
def test_edits_outside_a_windows_workspace_are_refused(file: str) -> None:
    edit = ProposedEdit(kind="replace_symbol_body", file=file, symbol="X", body="x")
    with pytest.raises(EditError):
        edit_call(edit, "C:\\proj", flavor=W)
