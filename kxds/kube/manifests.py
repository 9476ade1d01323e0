"""The manifest source: a directory of Kubernetes YAML, watched for changes.

``ManifestSource(dir).run(publish)`` loads every ``*.yaml``/``*.yml``/``*.json``
below the directory (hidden files and directories skipped, as
:func:`kxds.kube.loader.manifest_files` does) and then polls it: a file that is
added, removed or changed (modification time, size or inode) causes one new
:class:`ClusterState` to be published. Only changed files are parsed again.

Polling, not inotify: it needs no dependency, works on every filesystem
(bind mounts, network filesystems, Kubernetes ConfigMap volumes, whose atomic
``..data`` symlink swap changes the inode that ``stat`` follows), and a stat
walk of a few hundred files costs well under a millisecond. The interval
grows with the cost of the walk so that a huge directory never takes more than
a fifth of a core.

A file whose YAML becomes malformed after it loaded once keeps its last good
objects (and is reported), the way ``kubectl apply`` of a broken file leaves
the cluster as it was; a half-written file caught mid-save, when it is
malformed, does not tear down routes either (one cut at a document boundary
does, until the next poll: write files atomically, as the README says).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kxds.diagnostics import Diagnostic, Reason
from kxds.kube.loader import SUFFIXES, load_file
from kxds.kube.models import ClusterState, Model

log = logging.getLogger("kxds.kube.manifests")

FileKey = tuple[int, int, int]
"""``(st_mtime_ns, st_size, st_ino)`` of a manifest file."""


@dataclass(frozen=True, slots=True)
class _Parsed:
    key: FileKey
    objects: tuple[Model, ...]
    problems: tuple[Diagnostic, ...]


def _reuse(old: tuple[Model, ...], new: list[Model]) -> list[Model]:
    """``new``, with each object equal to its old version replaced by that old model.

    Translation reuses its results for objects that are the same model object
    (:mod:`kxds.memo`): without this, editing one object of a file would make
    every object of that file look changed.
    """
    before = {(type(o), o.meta.key): o for o in old}
    out: list[Model] = []
    for o in new:
        prev = before.get((type(o), o.meta.key))
        out.append(prev if prev is not None and prev == o else o)
    return out


def scan(directory: Path) -> dict[Path, FileKey]:
    """Every manifest file below ``directory`` with its stat key (symlinks followed)."""
    found: dict[Path, FileKey] = {}
    stack = [directory]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue  # vanished or unreadable between listing and scanning
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.is_file() and os.path.splitext(entry.name)[1] in SUFFIXES:
                    st = entry.stat()
                    found[Path(entry.path)] = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                continue
    return found


def _keeps_last_good(old: _Parsed | None, new: _Parsed) -> bool:
    broken = any(p.reason is Reason.INVALID_YAML for p in new.problems)
    return broken and old is not None and bool(old.objects)


class ManifestSource:
    """A watched directory of manifests; implements the source interface."""

    def __init__(self, directory: Path, *, interval: float = 0.1,
                 max_interval: float = 2.0) -> None:
        self.directory = directory
        self.interval = interval
        self.max_interval = max_interval
        self._files: dict[Path, _Parsed] = {}
        self.generation = 0
        """How many states have been published."""
        self.scan_seconds = 0.0
        """How long the last stat walk took."""
        self._missing = False

    def refresh(self) -> ClusterState | None:
        """Scan once; the new state when anything changed (always on the first call)."""
        if self.generation and not self.directory.is_dir():
            # Unmounted or moved away: not the user emptying it. Keep the last
            # state rather than withdraw every route (a directory that exists
            # but is empty is published as empty).
            if not self._missing:
                log.warning("event=manifest_dir_missing path=%s keeping=last_state",
                            self.directory)
            self._missing = True
            return None
        self._missing = False
        started = time.monotonic()
        seen = scan(self.directory)
        self.scan_seconds = time.monotonic() - started
        changed = self.generation == 0 or seen.keys() != self._files.keys()
        files: dict[Path, _Parsed] = {}
        for path in sorted(seen):
            old = self._files.get(path)
            if old is not None and old.key == seen[path]:
                files[path] = old
                continue
            changed = True
            objects, problems = load_file(path)
            if old is not None:
                objects = _reuse(old.objects, objects)
            parsed = _Parsed(seen[path], tuple(objects), tuple(problems))
            if _keeps_last_good(old, parsed):
                assert old is not None
                log.warning("event=manifest_invalid path=%s keeping=last_good", path)
                parsed = _Parsed(seen[path], old.objects, parsed.problems)
            files[path] = parsed
        self._files = files
        if not changed:
            return None
        self.generation += 1
        return ClusterState.from_objects(
            [o for p in files.values() for o in p.objects],
            [d for p in files.values() for d in p.problems],
        )

    async def run(self, publish: Callable[[ClusterState], None]) -> None:
        """Publish the directory's state now and after every change; runs until cancelled."""
        if not self.directory.is_dir():
            log.warning("event=manifest_dir_missing path=%s", self.directory)
        while True:
            started = time.monotonic()
            state = await asyncio.to_thread(self.refresh)
            spent = time.monotonic() - started
            if state is not None:
                log.info("event=manifests_loaded generation=%d files=%d objects=%d "
                         "problems=%d seconds=%.3f", self.generation, len(self._files),
                         sum(len(p.objects) for p in self._files.values()),
                         len(state.problems), spent)
                publish(state)
            # Keep the walk under ~20% of a core on very large directories.
            pause = max(self.interval, 4 * self.scan_seconds)
            await asyncio.sleep(min(self.max_interval, pause))
