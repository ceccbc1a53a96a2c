"""The training thread policy: usable CPUs from the affinity mask and cgroup quota, OpenMP waits passive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdserve.train.threads import WAIT_POLICY_ENV, apply_thread_policy, machine_busy, others_running, usable_cpus


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000\n", None), ("50000 100000\n", 1), ("100000 100000\n", 1), ("150000 100000\n", 2)],
)
def test_a_cgroup_v2_quota_caps_the_affinity_mask(tmp_path: Path, cpu_max: str, expected: int | None) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    # a fractional quota rounds up (1.5 CPUs -> 2 threads), never more than the mask allows
    want = _affinity() if expected is None else min(_affinity(), expected)
    assert usable_cpus(tmp_path) == want


def test_a_cgroup_v1_quota_caps_it_too_and_no_cgroup_means_the_mask(tmp_path: Path) -> None:
    assert usable_cpus(tmp_path) == _affinity()  # no cgroup files at all
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "unlimited"
    assert usable_cpus(tmp_path) == _affinity()


def test_the_policy_fills_only_what_the_user_left_unset(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    env: dict[str, str] = {}
    assert apply_thread_policy(env, tmp_path, load=1.0, others=0.0)  # busy: load reaches the 1 usable CPU
    assert env == {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": "1"}
    mine = {"OMP_WAIT_POLICY": "ACTIVE", "OMP_NUM_THREADS": "7"}
    assert apply_thread_policy(mine, tmp_path, load=3.0, others=0.0)
    assert mine == {"OMP_WAIT_POLICY": "ACTIVE", "KMP_BLOCKTIME": "0", "OMP_NUM_THREADS": "7"}


def test_a_quiet_machine_keeps_the_runtime_default_waits(tmp_path: Path) -> None:
    """Passive waits cost about a third of a quiet epoch on 2 cores: only a busy machine gets them."""
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    env: dict[str, str] = {}
    assert apply_thread_policy(env, tmp_path, load=0.5, others=0.0)
    assert env == {"OMP_NUM_THREADS": str(min(2, _affinity()))}
    assert not machine_busy(2, 1.99, others=0.0) and machine_busy(2, 2.0, others=0.0)


def test_one_other_running_process_makes_the_machine_busy(tmp_path: Path) -> None:
    """One competitor on 2 cores keeps the 1-minute load near 1: the running count catches it."""
    assert machine_busy(2, load=1.1, others=1.0) and not machine_busy(2, load=1.1, others=0.0)
    # /proc/loadavg's fourth field counts the reader: "3/412" means two others; the median drops blips
    reads = iter(["0.50 0.40 0.30 3/412 999\n", "0.50 0.40 0.30 1/412 999\n", "0.50 0.40 0.30 3/412 999\n"])
    fake = tmp_path / "loadavg"

    def sample() -> float | None:
        fake.write_text(next(reads))
        return others_running(samples=1, loadavg=fake)

    assert [sample(), sample(), sample()] == [2.0, 0.0, 2.0]
    fake.write_text("0.50 0.40 0.30 2/412 999\n")
    assert others_running(samples=3, interval_s=0.0, loadavg=fake) == 1.0
    fake.write_text("garbage\n")
    assert others_running(samples=2, interval_s=0.0, loadavg=fake) is None


def test_the_process_environment_is_left_alone_once_torch_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Too late to matter: OpenMP read its environment when torch loaded; nothing is half-applied."""
    monkeypatch.setitem(sys.modules, "torch", sys.modules.get("torch", object()))
    for name in (*WAIT_POLICY_ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    assert apply_thread_policy() is False
    assert not any(name in os.environ for name in (*WAIT_POLICY_ENV, "OMP_NUM_THREADS"))


def _child(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in (*WAIT_POLICY_ENV, "OMP_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_importing_the_training_package_sets_torch_up_before_it_loads() -> None:
    """In a fresh process, as the CLI runs: ``kdserve.train`` first, then torch sees the policy;
    an exported OMP_NUM_THREADS still wins, and so does ``--threads`` (``torch.set_num_threads``)."""
    pytest.importorskip("torch")
    probe = (
        "import os, kdserve.train, torch; print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads(), end=' '); "
        "torch.set_num_threads(1); print(torch.get_num_threads())"
    )
    # the wait policy depends on the load average at start (tested with fixed loads above)
    policy, threads, overridden = _child(probe.replace("['OMP_WAIT_POLICY']", ".get('OMP_WAIT_POLICY')")).split()
    assert policy in ("PASSIVE", "None") and (threads, overridden) == (str(usable_cpus()), "1")
    assert _child(probe, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE 1 1"
