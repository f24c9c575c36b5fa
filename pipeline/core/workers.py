"""Work spread over spawned worker processes, watched both ways. A worker that dies (the kernel's OOM
killer, a crash inside a decoder) stops the stage with one line naming the file it was reading,
where multiprocessing.Pool would wait for its result forever; a stage that is killed takes its
workers with it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing.sharedctypes import Synchronized
from types import FrameType
from typing import Any, TypeVar

from pipeline.core.params import PipelineError

Item = TypeVar("Item")
Result = TypeVar("Result")

# A worker process's own state, set by _init_worker: the task it runs, and its slot of the board
# where it notes the item it is working on, for the stage to name should it die there.
_task: Callable[[Any], Any] | None = None
_board: MutableSequence[int] | None = None
_slot = 0


def _init_worker(task: Callable[[Any], Any] | None, board: MutableSequence[int], slots: Synchronized,
                 stage_pid: int, setup: Callable[..., None] | None, setup_args: tuple) -> None:
    global _task, _board, _slot
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the stage's to handle
    signal.signal(signal.SIGTERM, _end_quietly)
    threading.Thread(target=_watch_stage, args=(stage_pid,), daemon=True).start()
    with slots.get_lock():
        _slot, slots.value = slots.value, slots.value + 1
    _task, _board = task, board
    if setup is not None:
        setup(*setup_args)


def _end_quietly(signum: int, frame: FrameType | None) -> None:
    """When one worker dies, the pool ends the others with SIGTERM: they leave their slot empty,
    so the board names only the item of the one that died."""
    if _board is not None:
        _board[_slot] = -1
    os._exit(1)


def _watch_stage(stage_pid: int) -> None:
    """End this worker once the stage process is gone (killed): nobody is left to take its results,
    and the pool's queues would keep it waiting forever. The stage's pid comes from the stage, not
    from getppid() here: a worker still starting up when the stage is killed is already an orphan."""
    while os.getppid() == stage_pid:
        time.sleep(1)
    os._exit(1)


def _run_noted(job: tuple[int, Any]) -> Any:
    """The task on one item, with the item's index on the board while the worker is on it."""
    index, item = job
    assert _task is not None and _board is not None
    _board[_slot] = index
    try:
        return _task(item)
    finally:
        _board[_slot] = -1


@contextmanager
def watched_map(task: Callable[[Item], Result], items: Sequence[Item], names: Sequence[str], *,
                stage: str, advice: str, workers: int, chunksize: int = 1,
                setup: Callable[..., None] | None = None,
                setup_args: tuple = ()) -> Iterator[Iterator[Result]]:
    """task's results for every item, in their order, from `workers` spawned processes that first
    run setup(*setup_args). A worker that dies raises PipelineError: "a <stage> worker process died
    while reading <names of its items> (<advice>)". Workers still busy when the stage stops first
    finish their current item. `task` and `setup` must be module-level functions (pickled by name)."""
    # spawned, not forked: a fork of a process that already runs threads (torch's, OpenCV's, a
    # caller's) can copy a held lock into the child and hang it
    context = multiprocessing.get_context("spawn")
    board = context.RawArray("i", [-1] * workers)  # per worker: the index of the item it is on
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                               initargs=(task, board, context.Value("i", 0), os.getpid(), setup,
                                         setup_args))
    try:
        yield pool.map(_run_noted, enumerate(items), chunksize=chunksize)
    except BrokenProcessPool:
        pool.shutdown()  # the other workers end and leave their slots empty
        reading = " or ".join(names[index] for index in board if index >= 0)
        raise PipelineError(f"a {stage} worker process died{' while reading ' + reading if reading else ''} "
                            f"({advice}); the previous output is left as it was") from None
    finally:
        pool.shutdown(cancel_futures=True)
