"""Reliability of batch embedding (issue 13): non-finite features, dead and orphaned reader workers,
the store's writer lock, mixed models, and sources that changed since they were embedded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_model, phantom
from voxelfm.cli.main import app
from voxelfm.core import VoxelFeatures
from voxelfm.core.errors import StoreError
from voxelfm.core.processes import pid_alive
from voxelfm.embed import EmbeddingStore, collect_jobs, run_embedding
from voxelfm.embed import batch as batch_module
from voxelfm.embed.readers import ReaderPool
from voxelfm.embed.store import NonFiniteFeaturesError


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    """A hang is a failure here, not a stuck test run."""
    def _timeout(*_: object) -> None:
        raise TimeoutError("test hung for 60 s")

    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _features(value: float = 0.5) -> VoxelFeatures:
    return VoxelFeatures(cls=np.full(4, value, np.float32), patch=np.full((1, 1, 2, 4), value, np.float32),
                         registers=np.zeros((1, 4), np.float32), model_id="m", mode="3d")


# -- non-finite features -------------------------------------------------------------------------
def test_non_finite_features_are_recorded_as_failed_never_ok(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store")
    store.write("good", _features())
    bad = _features()
    bad.patch[0, 0, 1, 2] = np.inf
    bad.cls[0] = np.nan
    with pytest.raises(NonFiniteFeaturesError, match=r"1 of 4 cls values, 1 of 8 patch values are NaN/Inf"):
        store.write("bad", bad, source=tmp_path / "bad.nii.gz")
    assert store.ids() == ["good"] and store.ids("failed") == ["bad"]
    assert "not finite" in store.records().set_index("scan_id").loc["bad", "error"]
    assert not store.entry_path("bad").exists()


def test_a_batch_records_non_finite_features_once_and_goes_on(model, scans_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    real = batch_module.features_from_preprocessed
    calls: list[int] = []

    def nan_for_case1(model, pre, **kwargs):  # noqa: ANN001, ANN003, ANN202 - same call as the real one
        feats = real(model, pre, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # in-process, in id order: case0, case1, case2 ("broken" fails to read)
            feats.cls[:] = np.nan
        return feats

    monkeypatch.setattr(batch_module, "features_from_preprocessed", nan_for_case1)
    summary = run_embedding(model, collect_jobs([scans_dir]), tmp_path / "store", workers=0)
    store = EmbeddingStore(tmp_path / "store")
    assert (summary.done, summary.failed) == (2, 2)
    assert store.ids() == ["case0", "case2"] and store.ids("failed") == ["broken", "case1"]
    attempts = store.records(all_attempts=True)
    assert (attempts.scan_id == "case1").sum() == 1  # recorded once, by the store
    assert "cls values" in dict(summary.failures)["case1"]


# -- reader workers that die ---------------------------------------------------------------------
def _kill_self_on_case1(job, spec):  # noqa: ANN001, ANN202
    if job.scan_id == "case1" and os.getpid() != MAIN_PID:
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
    return REAL_READ(job, spec)


MAIN_PID = os.getpid()
REAL_READ = batch_module._read_job


def test_a_dead_reader_worker_fails_its_scan_and_the_run_goes_on(model, scans_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_module, "_read_job", _kill_self_on_case1)
    summary = run_embedding(model, collect_jobs([scans_dir]), tmp_path / "store", workers=2)
    store = EmbeddingStore(tmp_path / "store")
    assert (summary.done, summary.failed, summary.worker_deaths) == (2, 2, 1)
    assert store.ids() == ["case0", "case2"] and store.ids("failed") == ["broken", "case1"]
    reason = dict(summary.failures)["case1"]
    assert "case1.nii.gz" in reason and "killed by SIGKILL" in reason and "out-of-memory" in reason
    # A re-run retries it (and here, reading it in a healthy worker, succeeds).
    monkeypatch.setattr(batch_module, "_read_job", REAL_READ)
    again = run_embedding(model, collect_jobs([scans_dir]), tmp_path / "store", workers=2)
    assert again.done == 1 and sorted(again.retried) == ["broken", "case1"]


def _die_in_workers(item: int) -> int:
    if os.getpid() != MAIN_PID:
        os.kill(os.getpid(), signal.SIGKILL)
    return item * 10


def test_after_too_many_worker_deaths_the_rest_is_read_in_process() -> None:
    with ReaderPool(_die_in_workers, 1, on_death=lambda item, reason: ("died", item, reason),
                    max_restarts=1) as pool:
        results = list(pool.imap(range(5)))
    died = [r for r in results if isinstance(r, tuple)]
    assert [r[1] for r in died] == [0, 1] and all("SIGKILL" in r[2] for r in died)
    assert sorted(r for r in results if not isinstance(r, tuple)) == [20, 30, 40]
    assert pool.deaths == 2 and pool.pids == []


# -- orphans after kill -9 -----------------------------------------------------------------------
ORPHAN_SCRIPT = textwrap.dedent("""
    import os, sys, time
    import voxelfm.core.processes as processes
    import voxelfm.embed.batch as batch
    pid_file, how = sys.argv[1], sys.argv[2]
    if how == "watchdog":  # as on a system without prctl: only the parent-pid watchdog is left
        processes._set_parent_death_signal = lambda sig: False
    def read(job, spec):
        with open(pid_file, "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        time.sleep(300)
    batch._read_job = read
    from voxelfm.cli.main import app
    app(sys.argv[3:])
""")


def test_reader_workers_exit_when_embed_is_killed(model_dir: Path, scans_dir: Path, tmp_path: Path) -> None:
    # (the watchdog fallback alone, without prctl: tests/core/test_processes.py)
    how = "prctl"
    script, pid_file, store = tmp_path / "run.py", tmp_path / "pids.txt", tmp_path / "store"
    script.write_text(ORPHAN_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(pid_file), how, "embed", str(scans_dir), "--model", str(model_dir),
         "--out", str(store), "--workers", "2", "--device", "cpu", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:  # wait until both workers are reading (their pids are written)
            pids = [int(p) for p in pid_file.read_text().split()] if pid_file.exists() else []
            if len(set(pids)) >= 2:
                break
            assert proc.poll() is None, "embed ended before its workers started"
            time.sleep(0.1)
        assert len(set(pids)) >= 2
        assert all(pid_alive(p) for p in pids)
        proc.kill()  # kill -9: the parent gets no chance to stop its workers
        proc.wait()
        deadline = time.monotonic() + 10
        while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(pid_alive(p) for p in pids), f"orphaned reader workers: {pids}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The lock left by the killed run is stale: a new run takes the store over and finishes.
    summary = run_embedding(make_model(), collect_jobs([scans_dir]), store, workers=0)
    assert summary.done == 3


# -- the store's writer lock and mixed models ----------------------------------------------------
def test_a_second_writer_gets_a_one_line_error_naming_the_holder(model, scans_dir: Path, tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store")
    jobs = collect_jobs([scans_dir])
    with store.lock():
        with pytest.raises(StoreError, match=rf"another voxelfm embed \(pid {os.getpid()} on "):
            run_embedding(model, jobs, tmp_path / "store", workers=0)
        # another shard has its own manifest and lock
        EmbeddingStore(tmp_path / "store", shard=(1, 2)).lock().__enter__()
    assert EmbeddingStore(tmp_path / "store").ids(None) == []  # the refused run wrote nothing
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(StoreError, match="a_file: cannot open the store for writing"):
        run_embedding(model, jobs, tmp_path / "a_file", workers=0)
    assert run_embedding(model, jobs, tmp_path / "store", workers=0).done == 3


def test_cli_second_writer_and_stale_lock(model_dir: Path, scans_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    # A lock file left by a run that was killed: its pid is dead, nobody holds the flock.
    (store / ".lock").write_text(f'{{"pid": {int(dead.stdout)}, "host": "{socket.gethostname()}", "since": 0}}\n')
    runner = CliRunner()
    args = ["embed", str(scans_dir), "--model", str(model_dir), "--out", str(store), "--workers", "0",
            "--device", "cpu", "--no-progress"]
    with EmbeddingStore(store).lock():
        busy = runner.invoke(app, args)
    assert busy.exit_code == 1
    lines = [line for line in busy.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is writing to this store" in lines[0], busy.output
    done = runner.invoke(app, args)
    assert done.exit_code == 2 and EmbeddingStore(store).ids() == ["case0", "case1", "case2"], done.output


def test_mixing_models_in_one_store_needs_an_explicit_flag(model, scans_dir: Path, tmp_path: Path) -> None:
    jobs = collect_jobs([scans_dir])
    run_embedding(model, jobs[:2], tmp_path / "store", workers=0)
    other = make_model(seed=1)
    with pytest.raises(StoreError, match=r"holds 1 embedding\(s\) of model .* --allow-mixed-models"):
        run_embedding(other, jobs, tmp_path / "store", workers=0)
    summary = run_embedding(other, jobs[2:], tmp_path / "store", workers=0, allow_mixed_models=True)
    assert summary.done == 2
    assert set(EmbeddingStore(tmp_path / "store").records().model_id.dropna()) == {model.model_id, other.model_id}


# -- changed sources -----------------------------------------------------------------------------
def test_a_changed_source_is_embedded_again(model, scans_dir: Path, tmp_path: Path) -> None:
    from voxelfm.io import write_nifti

    jobs = collect_jobs([scans_dir])
    run_embedding(model, jobs, tmp_path / "store", workers=0)
    before = EmbeddingStore(tmp_path / "store").get("case0").cls.copy()
    vol = phantom(7)  # other data under the same file name (and scan id)
    write_nifti(vol.array, vol.geometry, scans_dir / "case0.nii.gz")
    os.utime(scans_dir / "case0.nii.gz", ns=(time.time_ns(), time.time_ns() + 10**9))
    again = run_embedding(model, jobs, tmp_path / "store", workers=0)
    assert (again.done, again.skipped, again.changed, again.retried) == (1, 2, ["case0"], ["broken"])
    after = EmbeddingStore(tmp_path / "store").get("case0").cls
    assert not np.allclose(before, after)
    # the same scan id now naming another file (a CSV manifest) is a change too
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"scan_id,path\ncase0,{scans_dir / 'case2.nii.gz'}\n")
    moved = run_embedding(model, collect_jobs([manifest]), tmp_path / "store", workers=0)
    assert moved.changed == ["case0"]
    np.testing.assert_allclose(EmbeddingStore(tmp_path / "store").get("case0").cls,
                               EmbeddingStore(tmp_path / "store").get("case2").cls, rtol=1e-5, atol=1e-5)


def test_source_fingerprints_of_files_and_folders(tmp_path: Path) -> None:
    from voxelfm.core.fingerprint import source_fingerprint

    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.dcm").write_bytes(b"x" * (i + 1))
    first = source_fingerprint(folder)
    assert first == source_fingerprint(folder) and len(first) == 16
    (folder / "1.dcm").write_bytes(b"yy")  # same size, new mtime
    os.utime(folder / "1.dcm", ns=(1, 1))
    assert source_fingerprint(folder) != first
    assert source_fingerprint(tmp_path / "missing.nii.gz") is None


def test_taking_the_lock_removes_half_written_entries_of_dead_writers(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path / "store")
    store.entries_dir.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = store.entries_dir / f".case0.safetensors.tmp-{int(dead.stdout)}"
    live = store.entries_dir / ".case1.safetensors.tmp-1"  # pid 1 runs: a write in progress elsewhere
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    sharded = EmbeddingStore(tmp_path / "store", shard=(0, 2))
    with sharded.lock():  # another shard may be writing from another host: only old files go
        assert stale.exists()
    with store.lock():
        pass
    assert not stale.exists() and live.exists()
