"""The core is sans-IO: it imports no I/O library and reads no clock."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import routerd.core

CORE = pathlib.Path(routerd.core.__file__).parent

#: Modules the core must never import, directly or through a submodule.
BANNED = {
    "trio", "httpx", "httpcore", "anyio", "asyncio", "mcp", "socket", "time", "subprocess",
    "threading", "select", "selectors", "ssl", "urllib.request", "http.client", "sqlite3",
    "systemd",
}


def _core_files() -> list[pathlib.Path]:
    return sorted(CORE.rglob("*.py"))


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _is_banned(name: str) -> bool:
    return any(name == b or name.startswith(b + ".") for b in BANNED)


def test_core_has_modules() -> None:
    assert len(_core_files()) >= 2


def test_core_sources_import_nothing_banned() -> None:
    offenders = {
        f"{p.relative_to(CORE.parent.parent)}: {name}"
        for p in _core_files()
        for name in _imports(p)
        if _is_banned(name)
    }
    assert not offenders, f"routerd.core imports I/O modules: {sorted(offenders)}"


def test_core_sources_do_not_read_clocks_or_environment() -> None:
    bad = ("os.environ", "os.getenv", "open(", "perf_counter", "monotonic(", "datetime.now(")
    offenders = [
        f"{p.name}: {token}"
        for p in _core_files()
        for token in bad
        if token in p.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders


def test_importing_core_loads_no_io_library() -> None:
    mods = sorted(
        "routerd.core." + ".".join(p.relative_to(CORE).with_suffix("").parts)
        for p in _core_files()
        if p.name != "__init__.py"
    )
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in mods)
        + "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        + "('trio','httpx','httpcore','anyio','mcp','systemd'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
