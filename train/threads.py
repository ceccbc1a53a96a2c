"""CPU thread policy for training on a shared machine (torch-free: it must run before torch loads).

Why: PyTorch's CPU kernels run in OpenMP parallel regions that end in a barrier. With the GNU
OpenMP runtime's default wait policy a thread that reaches the barrier first spins for a while
before it sleeps, so on a 2-core machine where another process wants one core, our idle thread
burns the core our other thread needs, and every region waits for a scheduler time slice: the
teacher trained at 8-20 examples/s instead of about 100 (issue 25). With ``OMP_WAIT_POLICY=PASSIVE``
a waiting thread sleeps at once and gives the core away, so training slows down in proportion to
the CPU it gets. On a quiet machine the spin is what makes short regions cheap, so passive waits
are chosen only when the machine is already busy at start (``machine_busy``: another process
running, or a load average at the CPU count). ``KMP_BLOCKTIME=0``
is the same setting for Intel's OpenMP runtime (used by some MKL builds); GNU's ignores it.

The wait policy is read once, when the OpenMP runtime loads (``import torch``), so
``apply_thread_policy`` runs from ``kdserve/train/__init__.py``, before any module of this
package imports torch. It only fills in what the user left unset: an exported ``OMP_WAIT_POLICY``
or ``OMP_NUM_THREADS`` wins, and so does ``--threads`` (``torch.set_num_threads`` after import).
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path

#: Environment defaults for the OpenMP runtimes; a value the user exported is kept.
WAIT_POLICY_ENV: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def _cgroup_cpu_limit(root: Path) -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max" and float(period) > 0:
            return float(quota) / float(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_us = float((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = float((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def usable_cpus(cgroup_root: str | Path = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: the affinity mask (``taskset``, Docker ``--cpuset-cpus``), capped by
    the cgroup quota (Docker ``--cpus``, Kubernetes limits) rounded up; at least 1.

    ``os.cpu_count()`` counts the host's cores, which in a container with ``--cpus 2`` on a 64-core
    host starts 64 threads that share 2 CPUs of quota: the oversubscription this module exists to avoid.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = _cgroup_cpu_limit(Path(cgroup_root))
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit)))
    return max(1, cpus)


def others_running(samples: int = 5, interval_s: float = 0.02, loadavg: str | Path = "/proc/loadavg") -> float | None:
    """Processes other than this one running or waiting for a CPU right now: the median over
    ``samples`` reads of ``/proc/loadavg``'s runnable count (its fourth field, ``R/T``, counts the
    reader too), so a kernel thread that runs for an instant does not count. None off Linux."""
    counts = []
    for i in range(samples):
        try:
            runnable = int(Path(loadavg).read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return None
        counts.append(max(runnable - 1, 0))
        if i + 1 < samples:
            time.sleep(interval_s)
    return float(statistics.median(counts))


def machine_busy(cpus: int, load: float | None = None, others: float | None = None) -> bool:
    """True when other work wants the CPUs this process is about to fill: at least one other
    process is running right now (``others_running``), or the 1-minute load average reaches ``cpus``.

    Why it decides the wait policy (docs/RESULTS.md, issue 25, 2-core box, a teacher slice's
    examples/s): beside one CPU-bound competitor the runtime's default spin-then-sleep waits kept
    21-22 examples/s of 63-65 alone (33%), passive waits 38-45 (61%); alone, passive waits cost
    about a quarter (44-54). One competitor on 2 cores leaves the 1-minute load near 1, under the
    CPU count, so the load average alone missed exactly that case: the running count catches it.
    """
    if others is None:
        others = others_running()
    if others is not None and others >= 1:
        return True
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not available: assume quiet, the runtime's default
            return False
    return load >= cpus


def apply_thread_policy(
    environ: dict[str, str] | None = None,
    cgroup_root: str | Path = "/sys/fs/cgroup",
    load: float | None = None,
    others: float | None = None,
) -> bool:
    """``OMP_NUM_THREADS = usable_cpus()`` and, on a busy machine (``machine_busy``), passive OpenMP
    waits, where the user set none. Chosen once, when the process starts: the runtime reads it once.

    Returns False (and changes nothing) when torch is already imported: the runtime has read its
    environment by then, and a half-applied policy would be harder to explain than none.
    ``environ`` defaults to ``os.environ`` (child processes, e.g. spaCy workers, inherit it too).
    """
    env = os.environ if environ is None else environ
    if environ is None and "torch" in sys.modules:
        return False
    cpus = usable_cpus(cgroup_root)
    if machine_busy(cpus, load, others):
        for name, value in WAIT_POLICY_ENV.items():
            env.setdefault(name, value)
    env.setdefault("OMP_NUM_THREADS", str(cpus))
    return True
