"""The manifest directory source: loading, change detection, bad files."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from kxds.diagnostics import Reason
from kxds.kube import loader, manifests
from kxds.kube.manifests import ManifestSource, scan
from kxds.kube.models import ClusterState


def svc(name: str, port: int = 80) -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  ports: [{{name: http, port: {port}}}]\n")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def names(state: ClusterState) -> set[str]:
    return {name for (_, name) in state.services}


def test_loads_every_manifest_kind_of_file(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a") + "---\n" + svc("b"))
    write(tmp_path / "sub" / "c.yml", svc("c"))
    as_list = {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "d"},
         "spec": {"ports": [{"port": 81}]}}]}
    write(tmp_path / "d.json", json.dumps(as_list))
    write(tmp_path / "notes.txt", svc("ignored"))
    write(tmp_path / ".hidden.yaml", svc("hidden"))
    write(tmp_path / ".git" / "x.yaml", svc("in-hidden-dir"))
    state = ManifestSource(tmp_path).refresh()
    assert state is not None
    assert names(state) == {"a", "b", "c", "d"}
    assert state.problems == ()


def test_publishes_only_on_change(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a"))
    source = ManifestSource(tmp_path)
    first = source.refresh()
    assert first is not None and names(first) == {"a"}
    assert source.refresh() is None  # nothing changed
    write(tmp_path / "b.yaml", svc("b"))  # addition
    added = source.refresh()
    assert added is not None and names(added) == {"a", "b"}
    write(tmp_path / "a.yaml", svc("a2"))  # change
    changed = source.refresh()
    assert changed is not None and names(changed) == {"a2", "b"}
    (tmp_path / "b.yaml").unlink()  # removal
    removed = source.refresh()
    assert removed is not None and names(removed) == {"a2"}
    assert source.generation == 4


def test_a_file_saved_again_with_the_same_objects_publishes_nothing(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a") + "---\n" + svc("b"))
    source = ManifestSource(tmp_path)
    assert source.refresh() is not None
    write(tmp_path / "a.yaml", "# a comment\n" + svc("a") + "---\n" + svc("b"))
    assert source.refresh() is None  # read again (new inode), nothing to publish
    write(tmp_path / "a.yaml", svc("b") + "---\n" + svc("a", port=81))
    changed = source.refresh()
    assert changed is not None and changed.services[("default", "a")].ports[0].port == 81
    assert source.generation == 2


def test_an_empty_directory_is_a_first_state(tmp_path: Path) -> None:
    state = ManifestSource(tmp_path).refresh()
    assert state is not None and list(state.objects()) == []


def test_only_changed_files_are_parsed_again(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(5):
        write(tmp_path / f"s{i}.yaml", svc(f"s{i}"))
    parsed: list[str] = []
    real = loader.load_file

    def counting(path: Path, *args):  # type: ignore[no-untyped-def]
        parsed.append(path.name)
        return real(path, *args)

    monkeypatch.setattr(manifests, "load_file", counting)
    source = ManifestSource(tmp_path)
    source.refresh()
    assert len(parsed) == 5
    parsed.clear()
    write(tmp_path / "s3.yaml", svc("s3", port=8080))
    state = source.refresh()
    assert parsed == ["s3.yaml"]
    assert state is not None and state.services[("default", "s3")].ports[0].port == 8080


def test_same_size_and_mtime_but_new_inode_is_a_change(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    write(path, svc("aa"))
    source = ManifestSource(tmp_path)
    source.refresh()
    st = path.stat()
    write(path, svc("bb"))  # same length; rename gives a new inode
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    state = source.refresh()
    assert state is not None and names(state) == {"bb"}


def test_malformed_yaml_is_reported_and_the_rest_loads(tmp_path: Path) -> None:
    write(tmp_path / "good.yaml", svc("good"))
    write(tmp_path / "bad.yaml", "apiVersion: v1\nkind: Service\nmetadata:\n  name: [x\n")
    state = ManifestSource(tmp_path).refresh()
    assert state is not None
    assert names(state) == {"good"}
    (problem,) = state.problems
    assert problem.reason is Reason.INVALID_YAML
    assert problem.ref.name.endswith("bad.yaml")
    assert problem.field.startswith("line ")


def test_a_file_broken_by_an_edit_keeps_its_last_good_objects(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a"))
    source = ManifestSource(tmp_path)
    source.refresh()
    write(tmp_path / "a.yaml", svc("a")[:40] + "\n  : [\n")
    state = source.refresh()
    assert state is not None
    assert names(state) == {"a"}
    assert [p.reason for p in state.problems] == [Reason.INVALID_YAML]
    write(tmp_path / "a.yaml", svc("fixed"))
    fixed = source.refresh()
    assert fixed is not None and names(fixed) == {"fixed"} and fixed.problems == ()


def test_a_bad_object_is_reported_and_skipped(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a") + "---\n" + svc("bad", port=70000))
    state = ManifestSource(tmp_path).refresh()
    assert state is not None
    assert names(state) == {"a"}
    assert [(p.ref.kind, p.ref.name) for p in state.problems] == [("Service", "bad")]


def test_scan_follows_symlinks_like_configmap_volumes(tmp_path: Path) -> None:
    # A ConfigMap volume: name.yaml -> ..data/name.yaml, ..data -> ..<timestamp>.
    v1 = tmp_path / "..2024_01"
    write(v1 / "a.yaml", svc("a"))
    (tmp_path / "..data").symlink_to(v1.name)
    (tmp_path / "a.yaml").symlink_to("..data/a.yaml")
    source = ManifestSource(tmp_path)
    first = source.refresh()
    assert first is not None and names(first) == {"a"}
    assert list(scan(tmp_path)) == [tmp_path / "a.yaml"]
    v2 = tmp_path / "..2024_02"
    write(v2 / "a.yaml", svc("b"))
    tmp_link = tmp_path / "..data_tmp"
    tmp_link.symlink_to(v2.name)
    os.replace(tmp_link, tmp_path / "..data")  # the kubelet's atomic swap
    state = source.refresh()
    assert state is not None and names(state) == {"b"}


def test_run_publishes_first_state_and_changes(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", svc("a"))
    seen: list[set[str]] = []

    async def scenario() -> None:
        source = ManifestSource(tmp_path, interval=0.02)
        got = asyncio.Event()

        def publish(state: ClusterState) -> None:
            seen.append(names(state))
            got.set()

        task = asyncio.create_task(source.run(publish))
        try:
            await asyncio.wait_for(got.wait(), 5)
            got.clear()
            write(tmp_path / "b.yaml", svc("b"))
            await asyncio.wait_for(got.wait(), 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert seen == [{"a"}, {"a", "b"}]


def test_a_vanished_directory_keeps_the_last_state(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    write(directory / "a.yaml", svc("a"))
    source = ManifestSource(directory)
    assert source.refresh() is not None
    moved = tmp_path / "elsewhere"
    directory.rename(moved)
    assert source.refresh() is None  # not "everything was deleted"
    moved.rename(directory)
    assert source.refresh() is None  # back, unchanged
    (directory / "a.yaml").unlink()
    assert source.refresh() is None  # emptied: held (test_manifests_guard.py)
    assert source.held is not None
