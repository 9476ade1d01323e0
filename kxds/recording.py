"""Recorded views of the state and config: every read a query makes is written down.

:class:`~kxds.incremental.Context` hands a running query the
:class:`~kxds.kube.models.ClusterState` and the translation config through these
views. Each access adds a :data:`Read` to the innermost frame of the running
queries (a key looked up, or :data:`WHOLE` for a collection iterated or
measured; ``(CONFIG, name)`` for a config attribute), which is how the store
knows what each query depends on without anybody listing it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from kxds.kube.models import ClusterState

WHOLE = "*"
"""The key of a read of a whole collection (iterating it, or its length)."""

CONFIG = "config"
"""The pseudo-field of config attribute reads: ``(CONFIG, attribute name)``."""

STATE_FIELDS = tuple(f.name for f in dataclasses.fields(ClusterState))

Read = tuple[str, Hashable]
"""What one read looked at: ``(field, key)``, key :data:`WHOLE` for the whole field."""


class Frame(Protocol):
    """What a running query's reads are recorded into (the store's frame of it)."""

    reads: set[Read]


def recorded_state(state: ClusterState, frames: Sequence[Frame]) -> ClusterState:
    """``state`` with every field a view recording its reads into ``frames[-1]``."""
    fields: dict[str, Any] = {}
    for name in STATE_FIELDS:
        value = getattr(state, name)
        fields[name] = (_recorded_tuple(name, value, frames) if isinstance(value, tuple)
                        else _RecordedMapping(name, value, frames))
    return ClusterState(**fields)


class _RecordedMapping(Mapping[Hashable, Any]):
    """A read-only mapping that records each access into the running query's frame."""

    __slots__ = ("_data", "_field", "_frames")

    def __init__(self, name: str, data: Mapping[Hashable, Any], frames: Sequence[Frame]) -> None:
        self._field = name
        self._data = data
        self._frames = frames

    def _whole(self) -> None:
        if self._frames:
            self._frames[-1].reads.add((self._field, WHOLE))

    def __getitem__(self, key: Hashable) -> Any:
        if self._frames:
            self._frames[-1].reads.add((self._field, key))
        return self._data[key]

    def get(self, key: Hashable, default: Any = None) -> Any:
        if self._frames:
            self._frames[-1].reads.add((self._field, key))
        return self._data.get(key, default)

    def __contains__(self, key: Any) -> bool:
        if self._frames:
            self._frames[-1].reads.add((self._field, key))
        return key in self._data

    def __iter__(self) -> Iterator[Hashable]:
        self._whole()
        return iter(self._data)

    def __len__(self) -> int:
        self._whole()
        return len(self._data)

    def __bool__(self) -> bool:
        self._whole()
        return bool(self._data)

    def keys(self) -> Any:
        self._whole()
        return self._data.keys()

    def items(self) -> Any:
        self._whole()
        return self._data.items()

    def values(self) -> Any:
        self._whole()
        return self._data.values()


class _RecordedTuple(tuple[Any, ...]):
    """A tuple (``ClusterState.problems``) whose every use is a read of the whole field."""

    _frames: Sequence[Frame]
    _field: str

    def _whole(self) -> None:
        if self._frames:
            self._frames[-1].reads.add((self._field, WHOLE))

    def __iter__(self) -> Iterator[Any]:
        self._whole()
        return super().__iter__()

    def __len__(self) -> int:
        self._whole()
        return super().__len__()

    def __getitem__(self, index: Any) -> Any:
        self._whole()
        return super().__getitem__(index)

    def __bool__(self) -> bool:
        self._whole()
        return super().__len__() > 0


def _recorded_tuple(name: str, data: tuple[Any, ...], frames: Sequence[Frame]) -> tuple[Any, ...]:
    out = _RecordedTuple(data)
    out._frames, out._field = frames, name
    return out


def recorded_config(config: Any, frames: Sequence[Frame]) -> Any:
    """``config`` (a frozen dataclass) as an instance of a subclass recording attribute reads."""
    cls = _CONFIG_CLASSES.get(type(config))
    if cls is None:
        cls = _CONFIG_CLASSES[type(config)] = _recording_class(type(config))
    copy: Any = object.__new__(cls)
    for f in dataclasses.fields(config):
        object.__setattr__(copy, f.name, getattr(config, f.name))
    object.__setattr__(copy, "_frames", frames)
    return copy


def _recording_class(base: type) -> type:
    def __getattribute__(self: object, name: str) -> Any:
        if name[0] != "_":
            frames = object.__getattribute__(self, "_frames")
            if frames:
                frames[-1].reads.add((CONFIG, name))
        return object.__getattribute__(self, name)

    return type(f"Recorded{base.__name__}", (base,),
                {"__slots__": ("_frames",), "__getattribute__": __getattribute__})


_CONFIG_CLASSES: dict[type, type] = {}
