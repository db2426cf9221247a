"""tools/sandbox.py: the worker sandbox both fuzzing campaigns run in (tools/fuzz.py,
tools/fuzz_readers.py). A case that loops is a ``hang``, one that allocates past the cap is
``memory``, a worker that dies inside a case is reported for that case once and the cases after
it still run in a fresh worker."""

from __future__ import annotations

import os
import time

from tools import sandbox

CAP = 3 * 1024**3


def _case(index: int) -> tuple:
    if index == 1:
        time.sleep(30)  # past the 1 s alarm
    elif index == 2:
        bytearray(2 * CAP)  # past the address-space cap
    elif index == 3:
        os._exit(7)  # the worker dies inside the case (as a segfault in a codec would)
    return "ok", f"case {index} in {os.getpid()}"


def _worker(conn, indices, timeout):
    sandbox.confine(CAP, CAP // 4)
    assert os.environ["MEDLOAD_MAX_VOLUME_BYTES"] == str(CAP // 4)
    sandbox.serve(conn, indices, lambda index: sandbox.guarded(timeout, lambda: _case(index)))


def test_hang_memory_and_crash_are_told_apart_and_the_campaign_goes_on():
    done, crashed = {}, []
    sandbox.supervise(
        _worker,
        [[0, 1, 2, 3, 4, 5]],
        (1,),
        on_done=lambda fields: done.__setitem__(fields[0], fields[1:]),
        on_crash=lambda index, code: crashed.append((index, code)),
    )
    assert {i: outcome for i, (outcome, _) in done.items()} == {0: "ok", 1: "hang", 2: "memory", 4: "ok", 5: "ok"}
    assert done[1][1] == "timeout" and done[2][1] == "MemoryError"
    assert crashed == [(3, 7)]  # reported once, for the case it died in
    first, after = (done[0][1].split()[-1], done[4][1].split()[-1])
    assert first != after and done[4][1].split()[-1] == done[5][1].split()[-1]  # a fresh worker went on


def test_two_workers_share_the_cases_and_each_is_done_once():
    done = []
    sandbox.supervise(
        _worker, [[0, 4], [5]], (5,), on_done=lambda fields: done.append(fields[0]), on_crash=lambda *a: done.append(a)
    )
    assert sorted(done) == [0, 4, 5]
