"""One run per run folder: two real runs with one name (exactly one trains), a held folder left untouched,
a lock left by a killed process taken over, and a process (a notebook kernel) reopening its own run."""

import json
import os
import signal
import subprocess
import sys

import pytest

from lab_utils.core import locks, paths
from lab_utils.core.paths import REPO_ROOT, output_dir
from tests.helpers import TINY_SFT, as_cli

TINY = as_cli({**TINY_SFT, "max_steps": 1})
HOLD = ("import sys, time; from lab_utils.core import paths; paths.run_dir(sys.argv[1], sys.argv[2]); "
        "print('held', flush=True); time.sleep(600)")
DIE_HOLDING = ("import os, signal, sys; from lab_utils.core import paths; paths.run_dir(sys.argv[1], sys.argv[2]); "
               "os.kill(os.getpid(), signal.SIGKILL)")


def lab(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1]


def test_two_runs_with_one_name_started_at_once_exactly_one_trains():
    runs = [lab("-m", "scripts.sft_alpaca", "--run_name=race", *TINY) for _ in range(2)]
    results = [(p.wait(timeout=1800), *p.communicate()) for p in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes[0] == 0 and codes[1] != 0, [(c, last_line(e)) for c, _, e in results]
    loser = next(err for code, _, err in results if code != 0)
    line = last_line(loser)
    assert line.startswith("error: run folder") and "is in use by pid" in line and "since" in line, loser[-2000:]
    winner_pid = next(p.pid for p, (code, _, _) in zip(runs, results) if code == 0)
    assert f"pid {winner_pid} on host" in line
    run = output_dir() / "sft_alpaca" / "race"
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 1  # one run's steps, not two
    assert [r["step"] for r in json.loads((run / "history.json").read_text()) if "loss" in r] == [1]


def test_a_held_run_folder_is_left_untouched(tmp_path):
    holder = lab("-c", HOLD, "sft_alpaca", "busy")
    try:
        assert holder.stdout.readline().strip() == "held"
        run = output_dir() / "sft_alpaca" / "busy"
        (run / "params.json").write_text('{"mine": true}')
        before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
        second = lab("-m", "scripts.sft_alpaca", "--run_name=busy", "--overwrite=true", *TINY)
        code, _, err = second.wait(timeout=900), *second.communicate()
        assert code != 0
        line = last_line(err)
        assert f"in use by pid {holder.pid} on host" in line and "since" in line, err[-2000:]
        assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before  # not even with overwrite
        assert (run / "params.json").read_text() == '{"mine": true}'
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_line(capsys):
    dead = lab("-c", DIE_HOLDING, "teach_svd", "stale")
    assert dead.wait(timeout=300) == -signal.SIGKILL
    holder = json.loads(locks.lock_path(output_dir() / "teach_svd" / "stale").read_text())
    assert holder["pid"] == dead.pid  # the killed process never released it
    run = paths.run_dir("teach_svd", "stale")
    line = capsys.readouterr().out.strip()
    assert line == (f"[lab] taking over the lock of run folder {run} from pid {dead.pid} on host {holder['host']} "
                    f"(since {holder['since']}): that process is gone")
    paths.mark_complete(run)  # released: another process can open it now
    assert locks.lock_path(run).read_text() == ""


def test_a_lock_from_before_a_reboot_is_taken_over(capsys):
    run = output_dir() / "teach_svd" / "rebooted"
    locks.lock_path(run).parent.mkdir(parents=True)
    other_boot = {**locks.this_process(), "boot": "an-earlier-boot"}  # this very pid, recorded in another boot
    locks.lock_path(run).write_text(json.dumps(other_boot))
    paths.run_dir("teach_svd", "rebooted")
    assert "the machine restarted since" in capsys.readouterr().out
    paths.mark_complete(run)


def test_one_process_may_reopen_its_own_run_like_a_notebook_kernel_rerunning_cells():
    first = paths.run_dir("sft_alpaca", "kernel")
    assert paths.run_dir("sft_alpaca", "kernel") == first  # a rerun cell: same process, no second run
    other = lab("-c", HOLD, "sft_alpaca", "kernel")
    assert other.wait(timeout=300) != 0 and "in use by pid" in last_line(other.communicate()[1])
    paths.mark_complete(first)  # the run finished: the lock is free for anyone
    again = lab("-c", HOLD.replace("time.sleep(600)", "pass"), "sft_alpaca", "kernel")
    assert again.wait(timeout=300) != 0 and "already finished" in last_line(again.communicate()[1])
    # a kernel that reruns a finished run with overwrite starts it again, and holds it again
    assert paths.run_dir("sft_alpaca", "kernel", overwrite=True) == first and not paths.is_complete(first)
    assert json.loads(locks.lock_path(first).read_text())["pid"] == os.getpid()
    paths.mark_complete(first)


def test_a_run_started_the_moment_another_takes_the_lock_still_names_the_holder(tmp_path):
    # the holder takes the OS lock first and writes its name a moment later; a run arriving in between
    # must wait for the name instead of saying "it left no name" (a CI race of two real runs)
    folder = tmp_path / "race"
    slow_namer = ("import sys, time; from filelock import FileLock; from lab_utils.core import locks; "
                  "path = locks.lock_path(sys.argv[1]); lock = FileLock(str(path), timeout=0, is_singleton=False); "
                  "lock.acquire(); print('locked', flush=True); time.sleep(0.5); "
                  "path.write_text(__import__('json').dumps(locks.this_process())); time.sleep(600)")
    holder = lab("-c", slow_namer, str(folder))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(locks.RunLockedError, match=f"is in use by pid {holder.pid} on host"):
            locks.hold_run(folder)
    finally:
        holder.kill()
        holder.wait()
