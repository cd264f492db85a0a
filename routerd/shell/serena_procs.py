"""Serena's processes: killing a whole process tree, and a record of what was started so a
daemon killed with SIGKILL does not leave Serenas (hundreds of MB each) behind.

Serena runs in a session of its own (``start_new_session``), so its process group id is its
pid. It starts each language server in yet another session, so killing Serena's group alone
would orphan them; :func:`kill_tree` also kills the groups of Serena's direct children.

A :class:`PidBook` keeps one small JSON file per running Serena, naming each process group
leader with its start time (``/proc/PID/stat`` field 22): at the next start, a leftover group
is killed only if its leader is still the same process (a pid can be reused).

Linux only (``/proc``); elsewhere nothing is found and only Serena's own group is killed. On
Windows that kills Serena alone (``osdeps.kill_process_group``): its language servers outlive
it, and nothing is recorded for the next start to reap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from .osdeps import kill_process_group

__all__ = ["Group", "PidBook", "child_groups", "kill_groups", "kill_tree", "start_time"]

log = logging.getLogger(__name__)

#: ``(pgid, start time of the group leader in clock ticks since boot)``.
Group = tuple[int, int]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    _, _, rest = raw.rpartition(")")
    return rest.split()  # rest[0] is field 3 (state)


def start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])  # field 22
    except ValueError:
        return None


def child_groups(pid: int) -> list[Group]:
    """Process groups led by direct children of ``pid`` in a group other than ``pid``'s."""
    out: list[Group] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for name in entries:
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None or len(fields) < 20:
            continue
        try:
            ppid, pgid, started = int(fields[1]), int(fields[2]), int(fields[19])
        except ValueError:
            continue
        if ppid == pid and pgid != pid and pgid == int(name):
            out.append((pgid, started))
    return out


def kill_groups(groups: Iterable[Group], *, check_start: bool = True) -> list[int]:
    """SIGKILL each group whose leader still has the recorded start time. Returns the pgids
    signalled. A group whose leader is gone is skipped when ``check_start`` (its pgid may
    belong to someone else by now)."""
    killed = []
    for pgid, started in groups:
        if check_start and start_time(pgid) != started:
            continue
        if kill_process_group(pgid):  # never our own group, never init's
            killed.append(pgid)
    return killed


def kill_tree(pid: int, extra: Iterable[Group] = ()) -> None:
    """SIGKILL Serena's group, the groups of its children (language servers), and ``extra``
    groups recorded earlier. Children are found before Serena dies and they are re-parented."""
    groups = child_groups(pid) + list(extra)
    kill_process_group(pid)
    kill_groups(groups)


class PidBook:
    """Records of running Serenas under ``directory`` (one ``<key>.json`` each)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def record(self, key: str, pid: int, groups: Iterable[Group] = ()) -> None:
        """Note that Serena ``pid`` (a group leader) and ``groups`` run for workspace ``key``."""
        started = start_time(pid)
        entries = [(pid, started)] if started is not None else []
        entries += [g for g in groups if g[0] != pid]
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self._path(key).with_suffix(".tmp")
        tmp.write_text(json.dumps({"daemon": os.getpid(), "groups": entries}), encoding="utf-8")
        tmp.replace(self._path(key))

    def forget(self, key: str, pid: int | None = None) -> None:
        """Drop the record for ``key`` (only if it is Serena ``pid``'s, when given: a new
        Serena for the same workspace may have recorded itself already)."""
        path = self._path(key)
        if pid is not None:
            try:
                groups = json.loads(path.read_text(encoding="utf-8")).get("groups") or [[None]]
            except (OSError, ValueError, AttributeError):
                return
            if groups[0][0] != pid:
                return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def reap(self) -> list[int]:
        """Kill every recorded group that is still alive and forget all records (call once,
        before any Serena starts). Returns the pgids killed."""
        killed: list[int] = []
        try:
            files = sorted(self.directory.glob("*.json"))
        except OSError:
            return killed
        for path in files:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                groups = [(int(p), int(s)) for p, s in data.get("groups", [])]
            except (OSError, ValueError, TypeError, AttributeError):
                groups = []
            found = kill_groups(groups)
            if found:
                log.warning("killed %d Serena process group(s) left behind by an earlier "
                            "routerd: %s", len(found), ", ".join(map(str, found)))
            killed += found
            with contextlib.suppress(OSError):
                path.unlink()
        return killed
