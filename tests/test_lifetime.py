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
