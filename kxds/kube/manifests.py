"""The manifest source: a directory of Kubernetes YAML, watched for changes.

``ManifestSource(dir).run(publish)`` loads every ``*.yaml``/``*.yml``/``*.json``
below the directory (hidden files and directories skipped, as
:func:`kxds.kube.loader.manifest_files` does) and then polls it: a file that is
added, removed or changed (modification time, size or inode) causes one new
:class:`ClusterState` to be published, unless a changed file yields the very
same objects again (a touch, a comment). Only changed files are parsed again.

Polling, not inotify: it needs no dependency, works on every filesystem
(bind mounts, network filesystems, Kubernetes ConfigMap volumes, whose atomic
``..data`` symlink swap changes the inode that ``stat`` follows), and a stat
walk of a few hundred files costs well under a millisecond. The interval
grows with the cost of the walk so that a huge directory never takes more than
a fifth of a core.

A file whose YAML becomes malformed (or too large) after it loaded once keeps
its last good objects (and is reported), the way ``kubectl apply`` of a broken
file leaves the cluster as it was; a half-written file caught mid-save, when it
is malformed, does not tear down routes either (one cut at a document boundary
does, until the next poll: write files atomically, as the README says). In the
same way an object that was valid and now has a schema error keeps its last
good version, reported, until it is fixed or removed.

A change that removes every object, or more than ``max_delete_fraction`` of
them at once, is held: the last state stays published, :attr:`ManifestSource.held`
says why (``/readyz`` shows it), until the files come back or kxds runs with
``allow_empty``. The same object in two files is reported and the first by
path is used; nodePorts left out are allocated (:mod:`kxds.kube.nodeports`).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kxds.diagnostics import Diagnostic, ObjectRef, escape
from kxds.kube.limits import LimitCounter, Limits
from kxds.kube.loader import SUFFIXES, first_by_path, load_file
from kxds.kube.models import ClusterState, Key, Model, Service
from kxds.kube.nodeports import allocate_node_ports

log = logging.getLogger("kxds.kube.manifests")

MIN_HELD_LOSS = 10
"""A partial removal is held only from this many objects on: editing a small
directory (renaming its one Service) is not a mass deletion. Removing *every*
object is held whatever the count."""

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
    (:mod:`kxds.incremental`): without this, editing one object of a file would make
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


def _same_content(old: _Parsed | None, new: _Parsed) -> bool:
    """Whether a file saved again yields the very same objects (:func:`_reuse`) and
    problems: a touch, a comment or a rewrite of the same content changes nothing."""
    return (old is not None and len(old.objects) == len(new.objects)
            and all(map(operator.is_, old.objects, new.objects))
            and old.problems == new.problems)


def _keeps_last_good(old: _Parsed | None, new: _Parsed) -> bool:
    """A file that yields nothing but a problem about the file itself (YAML, size)."""
    broken = not new.objects and any(p.ref.kind == "File" for p in new.problems)
    return broken and old is not None and bool(old.objects)


def _ident(ref: ObjectRef) -> tuple[str, str, str]:
    return (ref.kind, ref.namespace, ref.name)


def keep_last_good_objects(old: _Parsed | None, new: _Parsed) -> _Parsed:
    """``new``, with each object that was valid in ``old`` and is now rejected kept as it was.

    Its problem stays, saying that the last good version is in use; a typo in
    one field must not withdraw the routes of a whole Ingress.
    """
    if old is None or not new.problems:
        return new
    before = {_ident(o.meta.ref): o for o in old.objects}
    present = {_ident(o.meta.ref) for o in new.objects}
    kept: list[Model] = []
    problems: list[Diagnostic] = []
    for p in new.problems:
        prev = before.get(_ident(p.ref))
        if prev is None or _ident(p.ref) in present:
            problems.append(p)
            continue
        kept.append(prev)
        present.add(_ident(p.ref))
        problems.append(Diagnostic(p.ref, p.field, p.reason,
                                   f"{p.message} (its last good version stays in use)"))
    return _Parsed(new.key, new.objects + tuple(kept), tuple(problems))


@dataclass(frozen=True, slots=True, kw_only=True)
class ManifestOptions:
    """How the manifest source guards and completes its input (``kxds serve`` flags)."""

    limits: Limits = field(default_factory=Limits)
    max_delete_fraction: float = 0.5
    """Hold a change that removes more than this share of the objects at once."""
    allow_empty: bool = False
    """Publish whatever the directory holds, even nothing (turns the hold off)."""
    node_port_range: tuple[int, int] | None = (30000, 32767)
    """Allocate missing nodePorts from this range (None: leave them missing)."""


class ManifestSource:
    """A watched directory of manifests; implements the source interface."""

    def __init__(self, directory: Path, *, interval: float = 0.1,
                 max_interval: float = 2.0, options: ManifestOptions | None = None,
                 counter: LimitCounter | None = None) -> None:
        self.directory = directory
        self.interval = interval
        self.max_interval = max_interval
        self.options = options or ManifestOptions()
        self.counter = counter or LimitCounter()
        self._files: dict[Path, _Parsed] = {}
        self.generation = 0
        """How many states have been published."""
        self.scan_seconds = 0.0
        """How long the last stat walk took."""
        self._missing = False
        self._published: frozenset[tuple[str, str, str]] | None = None
        self.held: str | None = None
        """Why the directory's current content is not published (None: it is)."""
        self._services: Mapping[Key, Service] = {}
        """The last published Services (their allocated nodePorts kept as the same models)."""

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
            files[path] = self._load(path, seen[path], old)
            changed = changed or not _same_content(old, files[path])
        self._files = files
        if not changed:
            return None
        return self._publishable(files)

    def _load(self, path: Path, key: FileKey, old: _Parsed | None) -> _Parsed:
        objects, problems = load_file(path, self.options.limits, self.counter)
        if old is not None:
            objects = _reuse(old.objects, objects)
        parsed = keep_last_good_objects(old, _Parsed(key, tuple(objects), tuple(problems)))
        if _keeps_last_good(old, parsed):
            assert old is not None
            log.warning("event=manifest_invalid path=%s keeping=last_good", escape(str(path)))
            parsed = _Parsed(key, old.objects, parsed.problems)
        return parsed

    def _publishable(self, files: dict[Path, _Parsed]) -> ClusterState | None:
        """The state of ``files``, or None while a mass removal is held."""
        objects, problems = first_by_path(
            [(str(path), p.objects) for path, p in sorted(files.items())])
        problems += [d for p in files.values() for d in p.problems]
        if self.options.node_port_range is not None:
            objects, allocated = allocate_node_ports(objects, self.options.node_port_range,
                                                     self._services)
            problems += allocated
        keys = frozenset(_ident(o.meta.ref) for o in objects)
        reason = self._hold_reason(keys)
        if reason is not None:
            if self.held is None:
                log.warning("event=manifests_held reason=%s", escape(reason, 500))
                self.counter.hit("max_delete_fraction", str(self.directory), reason)
            self.held = reason
            return None
        if self.held is not None:
            log.info("event=manifests_released objects=%d", len(keys))
        self.held = None
        self._published = keys
        self.generation += 1
        state = ClusterState.from_objects(objects, problems)
        self._services = state.services
        return state

    def _hold_reason(self, keys: frozenset[tuple[str, str, str]]) -> str | None:
        before = self._published
        if self.options.allow_empty or not before:
            return None
        lost = len(before - keys)
        if not keys:
            return (f"every object is gone ({len(before)} before); the last state stays "
                    "until the files come back, or kxds runs with --allow-empty")
        if lost >= MIN_HELD_LOSS and lost / len(before) > self.options.max_delete_fraction:
            return (f"{lost} of {len(before)} objects removed at once, more than "
                    f"--max-delete-fraction {self.options.max_delete_fraction}; the last state "
                    "stays until the files come back, or kxds runs with --allow-empty")
        return None

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
