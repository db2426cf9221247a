"""A ring of shared-memory batch buffers that DataLoader workers write whole batches into.

Why (measured, ``bench/loader.py`` and the profile in docs/benchmarks.md): torch sends a
worker's batch by moving every tensor of it into a *fresh* shared-memory segment, which the
main process then maps. On this kind of machine the first touch of a fresh page is what costs:
a new 4 MiB segment took 8-14 ms to fill against 0.14 ms for memory touched before, longer than
reading and decoding the 64 slices it holds (about 5 ms). A worker was slower than no worker.

Here the main process owns a few buffers ("slots", files under ``/dev/shm``, created on demand
and sized for one batch) for the life of the DataLoader's iterator (all epochs with persistent
workers). Each batch of indices the sampler hands out carries a free slot (:class:`SlotTicket`);
the worker writes the batch's images and masks into that slot and sends back only the slot
number and the small per-item fields (:class:`SlotBatch`). The main process hands the batch
out as tensors *over the slot* (no copy), and the slot is reused only once every tensor and
view of that batch is gone: a batch a user keeps is never overwritten. When no slot is free
(every slot lent out, e.g. ``list(loader)``) or shared memory is full, the ticket carries no
slot and that batch crosses in fresh tensors as before. Slots are unlinked when the iterator
goes (the resource tracker unlinks them should the process die first).

Linux only (``/dev/shm``); elsewhere batches cross as torch sends them.
"""

from __future__ import annotations

import collections
import itertools
import mmap
import os
import secrets
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "SHM_DIR",
    "BatchRing",
    "SlotBatch",
    "SlotField",
    "SlotTicket",
    "SlotWriter",
    "aligned",
    "field_array",
    "field_bytes",
    "ring_available",
]

SHM_DIR = "/dev/shm"
_ALIGN = 64
_RINGS: weakref.WeakValueDictionary[str, BatchRing] = weakref.WeakValueDictionary()
_serial = itertools.count()
#: One field of a slot: ``(offset in bytes, numpy dtype string, shape)``.
SlotField = tuple[int, str, tuple[int, ...]]


def ring_available() -> bool:
    """Whether this system has POSIX shared memory as files under ``/dev/shm`` (Linux)."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)


def aligned(nbytes: int) -> int:
    """``nbytes`` rounded up to a multiple of 64 (each field of a slot starts on a cache line)."""
    return -(-int(nbytes) // _ALIGN) * _ALIGN


def field_bytes(entry: SlotField) -> int:
    """Bytes of one ``(offset, dtype, shape)`` field of a slot."""
    return int(np.prod(entry[2], dtype=np.int64)) * np.dtype(entry[1]).itemsize


def field_array(buffer: np.ndarray, entry: SlotField) -> np.ndarray:
    """The field ``(offset, dtype, shape)`` of a slot's bytes as an array (a view, writable)."""
    offset = entry[0]
    return buffer[offset : offset + field_bytes(entry)].view(entry[1]).reshape(entry[2])


@dataclass(frozen=True)
class SlotTicket:
    """The indices of one batch and where a worker writes it: ``ring``'s slot ``slot``, or fresh
    tensors when ``slot`` is None (no slot free)."""

    indices: list[int]
    ring: str
    slot: int | None
    nbytes: int

    @property
    def path(self) -> str:
        """The slot's file."""
        return os.path.join(SHM_DIR, f"{self.ring}-{self.slot}")


@dataclass
class SlotBatch:
    """A worker's answer for a ticket with a slot: what lies in the slot and the small fields.

    ``arrays`` names each big field's ``(offset, dtype, shape)`` in the slot; ``fields`` holds
    the batch's other entries in order (small numpy arrays and the key list), with the big
    fields' names at their places (value None). ``assemble`` turns the finished dict of
    tensors into what the loader yields (e.g. an ``(image, label)`` tuple).
    """

    ring: str
    slot: int
    arrays: dict[str, SlotField]
    fields: dict[str, Any]
    assemble: Any = field(default=None)

    def open(self) -> Any:
        """The batch as tensors over the slot, lent until the last of them is gone (main process)."""
        import torch

        ring = _RINGS.get(self.ring)
        if ring is None:
            raise RuntimeError(f"the batch ring {self.ring} is closed; its DataLoader iterator is gone.")
        token = ring.lend(self.slot)
        batch: dict[str, Any] = {}
        for name, value in self.fields.items():
            if name in self.arrays:
                value = torch.from_numpy(field_array(token, self.arrays[name]))
            elif isinstance(value, np.ndarray):
                value = torch.from_numpy(value)
            batch[name] = value
        return self.assemble(batch) if self.assemble is not None else batch

    def pin_memory(self, device: Any = None) -> Any:
        """Called by torch's pin-memory thread: the batch copied into pinned memory, the slot freed."""
        from torch.utils.data._utils.pin_memory import pin_memory

        return pin_memory(self.open(), device)


class BatchRing:
    """Slots of ``slot_bytes`` each, at most ``capacity``, created on demand (main process).

    Parameters
    ----------
    slot_bytes : int
        The size of one batch's images and masks (:func:`aligned` parts).
    capacity : int
        The most slots; a DataLoader keeps ``prefetch_factor * num_workers`` batches in flight,
        one more is being handed out and the loop holds the last one, hence that number + 2.

    Examples
    --------
    >>> ring = BatchRing(4096, capacity=1)
    >>> first, second = ring.ticket([0, 1]), ring.ticket([2, 3])
    >>> first.slot, second.slot      # one slot: the second batch goes the old way
    (0, None)
    >>> token = ring.lend(first.slot)
    >>> ring.ticket([4]).slot        # lent: still taken
    >>> del token
    >>> ring.ticket([4]).slot        # given back when the batch is gone
    0
    >>> ring.close()
    """

    def __init__(self, slot_bytes: int, *, capacity: int) -> None:
        self.slot_bytes = aligned(max(int(slot_bytes), 1))
        self.capacity = int(capacity)
        self.name = f"medload-{os.getpid()}-{next(_serial)}-{secrets.token_hex(4)}"
        self._maps: list[mmap.mmap] = []
        self._free: collections.deque[int] = collections.deque()
        self._sent: set[int] = set()  # ticketed, not yet lent (in a worker or in torch's queues)
        self._lock = threading.Lock()  # the pin-memory thread lends too
        self._warned = False
        _RINGS[self.name] = self

    def __len__(self) -> int:
        return len(self._maps)

    def path(self, slot: int) -> str:
        """The file of ``slot``."""
        return os.path.join(SHM_DIR, f"{self.name}-{slot}")

    def new_epoch(self) -> None:
        """Take back slots ticketed in an earlier pass that never came back as a batch.

        Call it where the sampler starts a pass: torch has then drained every task of the
        previous one (an early ``break``, a worker error), so no worker writes into them.
        """
        with self._lock:
            self._free.extend(sorted(self._sent))
            self._sent.clear()

    def ticket(self, indices: Any) -> SlotTicket:
        """Indices of the next batch with a free slot (or none: no slot free and no room for one)."""
        with self._lock:
            slot = self._free.popleft() if self._free else self._grow()
            if slot is not None:
                self._sent.add(slot)
        return SlotTicket([int(i) for i in indices], self.name, slot, self.slot_bytes)

    def lend(self, slot: int) -> np.ndarray:
        """The slot's bytes as one array; the slot is free again once it and every view of it are gone."""
        with self._lock:
            self._sent.discard(slot)
            token = np.frombuffer(self._maps[slot], np.uint8, self.slot_bytes)
        weakref.finalize(token, self._free.append, slot).atexit = False
        return token

    def _grow(self) -> int | None:
        if len(self._maps) >= self.capacity:
            return None
        slot = len(self._maps)
        path = self.path(slot)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            self._give_up(path, "could not be created")
            return None
        try:
            # Reserve the pages now: a full /dev/shm is an error here, not a SIGBUS in a worker.
            os.posix_fallocate(fd, 0, self.slot_bytes)
            self._maps.append(mmap.mmap(fd, self.slot_bytes))
        except OSError:
            os.unlink(path)
            self._give_up(path, "does not fit")
            return None
        finally:
            os.close(fd)
        _track(path)
        return slot

    def _give_up(self, path: str, why: str) -> None:
        if not self._warned:
            self._warned = True
            stat = os.statvfs(SHM_DIR)
            warnings.warn(
                f"a {self.slot_bytes / 2**20:.1f} MiB batch buffer {path} {why} "
                f"({stat.f_bavail * stat.f_frsize / 2**20:.0f} MiB free in {SHM_DIR}); batches cross "
                "in fresh shared memory instead, slower. Give the machine or container more "
                "shared memory (docker run --shm-size=1g) or lower batch_size or prefetch_factor.",
                ResourceWarning,
                stacklevel=4,
            )

    def close(self) -> None:
        """Unlink every slot (batches still lent stay readable: their memory goes with them)."""
        with self._lock:
            for slot in range(len(self._maps)):
                path = self.path(slot)
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                _untrack(path)
            self._maps = []
            self._free.clear()
            self._sent.clear()
        _RINGS.pop(self.name, None)


def _track(path: str) -> None:
    """Let multiprocessing's resource tracker unlink ``path`` should this process die without closing."""
    from multiprocessing import resource_tracker

    resource_tracker.register("/" + os.path.basename(path), "shared_memory")


def _untrack(path: str) -> None:
    from multiprocessing import resource_tracker

    resource_tracker.unregister("/" + os.path.basename(path), "shared_memory")


class SlotWriter:
    """A worker's view of the slots it was given tickets for, mapped once each (worker process)."""

    def __init__(self) -> None:
        self._ring = ""
        self._maps: dict[int, mmap.mmap] = {}

    def buffer(self, ticket: SlotTicket) -> np.ndarray:
        """The ticket's slot as writable bytes."""
        if ticket.ring != self._ring:  # a new iterator's ring: the old one is gone
            self._ring, self._maps = ticket.ring, {}
        slot = ticket.slot
        assert slot is not None  # asked only for tickets that carry a slot
        mm = self._maps.get(slot)
        if mm is None:
            fd = os.open(ticket.path, os.O_RDWR)
            try:
                mm = self._maps[slot] = mmap.mmap(fd, ticket.nbytes)
            finally:
                os.close(fd)
        return np.frombuffer(mm, np.uint8, ticket.nbytes)
