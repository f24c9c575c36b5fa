"""What the benchmarks share and the pipeline never runs: the machine's description, the CPU time
other processes take meanwhile, peak memory, and how a benchmark talks to the processes that
measure for it.

It lives here, not in pipeline/, because dvc.yaml makes every stage depend on the pipeline code it
imports: a benchmark helper kept there would rerun training whenever a benchmark changed.

The protocol: a benchmark starts each measurement as `python <script> <arguments>` in a fresh
process (its peak memory its own, no thread pools, allocator caches or compiled graphs inherited),
sends it requests on stdin, one line each, and reads its answers from stdout as JSON lines marked
with MARK; whatever else the process prints is passed on to stderr.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import torch

from pipeline.core.params import PipelineError

MARK = "@benchmark "  # starts a protocol line, among anything else a measuring process prints
BUSY_CORES = 0.1  # other processes using more than this, on average, skew a CPU measurement


# --- the machine ---------------------------------------------------------------------------------


def cpu_description() -> str:
    """The CPU's model name, and the instruction sets that decide whether bf16 is native."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    extensions = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    name = fields.get("model name") or platform.processor() or platform.machine()
    detail = f"family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    return f"{name} ({', '.join(filter(None, [detail, ' '.join(extensions)]))})"


def available_cores() -> int:
    """Cores this process may run on (a container's limit, not the host's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer reads what it ran (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_rss_bytes(children: bool = False) -> int:
    """Peak RSS of this process, or the largest of its reaped children's (Linux reports kilobytes)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss * 1024


# --- what else ran beside a measurement ----------------------------------------------------------


def busy_cpu_seconds() -> float | None:
    """CPU seconds every process on the machine has spent busy since boot (Linux /proc/stat)."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float | None:
    """CPU seconds of this process and all its descendants, live or reaped (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it exited meanwhile
        fields = text[text.rindex(")") + 2:].split()
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    me = os.getpid()
    if me not in times:
        return None

    def mine(pid: int) -> bool:
        while pid > 1:
            if pid == me:
                return True
            pid = parents.get(pid, 0)
        return False

    return sum(ticks for pid, ticks in times.items() if mine(pid)) / os.sysconf("SC_CLK_TCK")


class Phase:
    """Times a stretch of work, and how many cores processes outside this one and its descendants
    kept busy meanwhile: on a shared machine that tells a slow figure from a busy neighbour."""

    seconds: float
    others_cores: float | None

    def __enter__(self) -> Phase:
        self.busy, self.own, self.started = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self.started
        busy, own = busy_cpu_seconds(), own_cpu_seconds()
        if busy is None or own is None or self.busy is None or self.own is None:
            self.others_cores = None
        else:
            self.others_cores = max(0.0, (busy - self.busy) - (own - self.own)) / self.seconds


def mean_others_cores(spans: Sequence[tuple[float | None, float]]) -> float | None:
    """Cores other processes kept busy over several (cores, seconds) spans, weighted by seconds;
    unknown if any span's is."""
    known = [(cores, seconds) for cores, seconds in spans if cores is not None]
    if len(known) < len(spans):
        return None
    return sum(cores * seconds for cores, seconds in known) / sum(seconds for _, seconds in known)


def format_others(cores: float | None) -> str:
    return "?" if cores is None else f"{cores:.2f} cores"


# --- the protocol ------------------------------------------------------------------------------------


def send(message: dict[str, Any]) -> None:
    """The measuring process's side: one marked answer on stdout."""
    print(MARK + json.dumps(message), flush=True)


class MeasuringProcess:
    """The benchmark's side: one measuring process, `python <script> <arguments>`."""

    def __init__(self, script: Path, arguments: Sequence[str], name: str) -> None:
        self.name = name
        self.process = subprocess.Popen([sys.executable, str(script), *arguments], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[str] = self.process.stdin
        self.stdout: IO[str] = self.process.stdout

    def __enter__(self) -> MeasuringProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def failed(self) -> PipelineError:
        return PipelineError(f"the {self.name} failed (exit status {self.process.wait()})")

    def receive(self) -> dict[str, Any]:
        """Its next answer; what it prints beside them goes to stderr."""
        for line in self.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
            sys.stderr.write(line)
        raise self.failed()

    def request(self, line: str) -> dict[str, Any]:
        try:
            self.stdin.write(line + "\n")
            self.stdin.flush()
        except BrokenPipeError:
            raise self.failed() from None
        return self.receive()

    def close(self) -> None:
        """Let it end: passes on what else it prints, and fails unless it exits with status 0."""
        self.stdin.close()
        for line in self.stdout:
            sys.stderr.write(line)
        if self.process.wait() != 0:
            raise self.failed()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
