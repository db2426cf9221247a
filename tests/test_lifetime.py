"""medload.lifetime: what a batch does with Ctrl-C and with its caller's signal handlers."""

from __future__ import annotations

import signal

import pytest

import medload
from medload.errors import StoreError
from medload.lifetime import InterruptFlag


def test_a_handler_not_set_from_python_is_replaced_by_pythons_own_on_exit(monkeypatch):
    # signal.signal returns None when the handler before was installed by C code (a program that
    # embeds Python); restoring None raised TypeError at the end of every convert there.
    original = signal.getsignal(signal.SIGINT)
    real = signal.signal
    calls = []

    def embedded(signum, handler):
        calls.append(handler)
        previous = real(signum, handler)
        return None if len(calls) == 1 else previous  # the first call finds a C handler

    monkeypatch.setattr(signal, "signal", embedded)
    try:
        with InterruptFlag() as flag:
            assert signal.getsignal(signal.SIGINT) == flag._handle
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        real(signal.SIGINT, original)


def test_the_python_handler_before_is_put_back():
    def mine(signum, frame):  # pragma: no cover - never called
        pass

    original = signal.signal(signal.SIGINT, mine)
    try:
        with InterruptFlag():
            assert signal.getsignal(signal.SIGINT) is not mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, original)


def test_preview_closes_the_store_when_it_fails(tmp_path, monkeypatch):
    import numpy as np

    from medload import preview
    from medload.store.reader import StoreReader

    with medload.Store.create(tmp_path / "x.h5") as store:
        store.add(medload.Volume(np.zeros((2, 8, 8), np.float32), np.eye(4), modality="CT"))
    closed = []
    real_close = StoreReader.close

    def close(self):
        closed.append(True)
        real_close(self)

    def broken(*args, **kwargs):
        raise StoreError("a damaged chunk")

    monkeypatch.setattr(StoreReader, "close", close)
    monkeypatch.setattr(StoreReader, "read_slices", broken)
    with pytest.raises(StoreError, match="a damaged chunk"):
        preview.montage(tmp_path / "x.h5", tmp_path / "m.png", n=1)
    assert closed  # the handle is not left to the garbage collector


def _closes_recorded(monkeypatch):
    """StoreReader.close patched to record its calls; returns the list it appends to."""
    from medload.store.reader import StoreReader

    closed = []
    real_close = StoreReader.close

    def close(self):
        closed.append(True)
        real_close(self)

    monkeypatch.setattr(StoreReader, "close", close)
    return closed


def _broken_pipeline(monkeypatch):
    from medload.store.reader import StoreReader

    def broken(self):
        raise StoreError("the pipeline attribute is damaged")

    monkeypatch.setattr(StoreReader, "pipeline", property(broken))


def _small_store(path):
    import numpy as np

    with medload.Store.create(path) as store:
        store.add(medload.Volume(np.zeros((2, 8, 8), np.float32), np.eye(4), modality="CT", meta={"patient_key": "p1"}))
    return path


def test_info_closes_the_store_when_a_field_fails(tmp_path, monkeypatch):
    from medload.cli import main

    store = _small_store(tmp_path / "x.h5")
    closed = _closes_recorded(monkeypatch)
    _broken_pipeline(monkeypatch)
    assert main(["info", str(store), "--json"]) == 1  # a store error: exit 1, one line
    assert closed  # before, closed only when every field was read


def test_qc_closes_the_store_when_a_field_fails(tmp_path, monkeypatch):
    from medload.qc.report import write_qc

    store = _small_store(tmp_path / "x.h5")
    closed = _closes_recorded(monkeypatch)
    _broken_pipeline(monkeypatch)
    with pytest.raises(StoreError, match="the pipeline attribute is damaged"):
        write_qc(store, tmp_path / "qc", workers=0)
    assert closed


def test_split_of_a_store_path_closes_the_reader_it_opened(tmp_path, monkeypatch):
    store = _small_store(tmp_path / "x.h5")
    closed = _closes_recorded(monkeypatch)
    parts = medload.split(store, fractions={"train": 1.0})
    assert parts["train"] == ["p1"] and closed  # before, the reader was left to the garbage collector
