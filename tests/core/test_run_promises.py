"""The run scaffold's promises (`lepton_jax.run`, `lepton_jax.checkpoint`, `lepton_jax.metrics`), each tested as a
user meets it: through the launcher in a subprocess (always with a timeout, so a hang fails) or in-process, on the
smoke PPO config. One finished launcher run (`finished`) is shared; the tests that need one copy it."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import numpy as np
import pytest

from agents import ppo
from agents.configs import ppo as ppo_config
from lepton_jax import checkpoint
from lepton_jax import run as run_lib
from lepton_jax.errors import UserError
from lepton_jax.interrupt import Interrupted
from lepton_jax.metrics import MetricsWriter, strict_json
from lepton_jax.rl import loop
from tests.conftest import run_python, start_python

SMOKE = ["-m", "scripts.train", "--config=agents/configs/ppo.py:smoke"]  # 8 updates, a checkpoint every 2


def _launch(workdir, timeout=120):
    return run_python([*SMOKE, f"--workdir={workdir}"], timeout=timeout)


def _lines(text: str) -> list[str]:
    """Non-empty lines (split on newlines only: a progress bar redraws its line with carriage returns)."""
    return [line for line in text.split("\n") if line.strip()]


def _strict_load(text: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("finished") / "run")
    result = _launch(workdir, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def _unfinished_copy(finished, workdir) -> str:
    """A copy of the finished run as a killed one would have left it: no results.json."""
    shutil.copytree(finished, workdir)
    os.remove(os.path.join(workdir, "results.json"))
    return str(workdir)


# 1. A failed checkpoint save is one error line, never a hang.
def test_failed_checkpoint_save_is_one_error_line_not_a_hang(tmp_path):
    workdir = tmp_path / "run"
    # The save at update 4 (the second) cannot make its temporary directory: a dangling link holds its name.
    os.makedirs(workdir / "checkpoints")
    os.symlink(tmp_path / "nowhere" / "x", workdir / "checkpoints" / "4.orbax-checkpoint-tmp")
    result = _launch(workdir)  # before the fix: a traceback, then Orbax's threads kept the process alive
    lines = _lines(result.stderr)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1].startswith(f"error: a checkpoint could not be saved in {workdir}/checkpoints ("), lines
    assert sum("error" in line.lower() for line in lines) == 1, lines
    assert os.path.isdir(workdir / "checkpoints" / "2")  # the first save went through

    # A checkpoints path that is a file is refused before anything is built.
    os.makedirs(tmp_path / "file_run")
    open(tmp_path / "file_run" / "checkpoints", "w").close()
    with pytest.raises(UserError, match="checkpoints is not a directory"):
        run_lib.Run(ppo_config.get_config("smoke"), str(tmp_path / "file_run"))


# 2. One run per workdir: a second is refused while one runs; a killed run's lock is taken over.
def test_second_run_on_a_busy_workdir_is_refused_and_a_killed_runs_lock_taken_over(tmp_path, monkeypatch):
    config, workdir = ppo_config.get_config("smoke"), str(tmp_path / "run")
    holder = run_lib.Run(config, workdir, unit="update")
    result = _launch(workdir)
    lines = _lines(result.stderr)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[-1] == (
        f"error: workdir {workdir} is in use by another run (pid {os.getpid()}); wait for it to end, or use another "
        "--workdir"
    ), lines
    with pytest.raises(UserError, match="is in use by another run"):
        run_lib.restart_workdir(workdir)  # --restart must not pull the files from under a running run
    holder.close()
    fd = os.open(os.path.join(workdir, ".lock"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    os.close(fd)

    # A run killed while holding the lock (SIGKILL: no clean-up) leaves the file, not the lock.
    take = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); time.sleep(60)"
    )
    killed = subprocess.Popen([sys.executable, "-c", take, os.path.join(workdir, ".lock")], stdout=subprocess.PIPE)
    assert killed.stdout.readline() == b"locked\n"
    killed.kill()
    killed.wait(timeout=30)
    run_lib.Run(config, workdir, unit="update").close()  # taken over silently

    # Only the main process of a multi-process run takes the lock.
    os.makedirs(tmp_path / "other")
    monkeypatch.setattr(run_lib.parallel, "is_main_process", lambda: False)
    run_lib.Run(config, str(tmp_path / "other"), unit="update").close()
    assert not os.path.exists(tmp_path / "other" / ".lock")


# 3. A partial last line of metrics.jsonl (SIGKILL in mid-write) is dropped on resume.
def test_partial_last_metrics_line_is_dropped_on_resume(tmp_path, finished):
    workdir = _unfinished_copy(finished, tmp_path / "run")
    shutil.rmtree(os.path.join(workdir, "checkpoints", "8"))  # killed before its last checkpoint: resumes at 6
    metrics = os.path.join(workdir, "metrics.jsonl")
    text = _read(metrics)
    last_start = text.rstrip(b"\n").rfind(b"\n") + 1
    with open(metrics, "wb") as f:
        f.write(text[: last_start + (len(text) - last_start) // 2])
    _, results = loop.run(ppo_config.get_config("smoke"), workdir, ppo.make_agent)
    assert results["resumed_from_update"] == 6
    assert _read(metrics) == _read(os.path.join(finished, "metrics.jsonl"))  # as the uninterrupted run's
    for line in _read(metrics).decode().splitlines():
        _strict_load(line)


# 4. "No intact checkpoint" sticks until --restart (`restart_workdir`), which sets the old files aside.
def test_no_intact_checkpoint_refusal_sticks_until_restart(tmp_path):
    workdir = str(tmp_path / "run")
    directory = os.path.join(workdir, "checkpoints")
    state = {"w": jnp.arange(3.0)}
    ckpt = checkpoint.Checkpointer(directory)
    ckpt.save(1, state)
    ckpt.save(2, state, wait=True)
    ckpt.close()
    for dirpath, _, filenames in os.walk(directory):
        for name in filenames:
            with open(os.path.join(dirpath, name), "wb") as f:
                f.write(b"garbage")
    refusal = (
        f"no intact checkpoint in {directory} .*; run again with --restart to start afresh "
        rf"\(the old files are kept in {workdir}/set_aside-<time>/\)"
    )
    for _ in range(2):  # the second time every step has been set aside: before, that silently started afresh
        ckpt = checkpoint.Checkpointer(directory)
        with pytest.raises(UserError, match=refusal):
            ckpt.restore_latest(state)
        ckpt.close()
    assert not checkpoint.Checkpointer(directory).steps()

    target = run_lib.restart_workdir(workdir)
    assert os.path.basename(target).startswith("set_aside-") and not os.path.exists(directory)
    assert {"1.unreadable", "2.unreadable", checkpoint.REFUSED_MARKER} <= set(os.listdir(f"{target}/checkpoints"))
    assert checkpoint.Checkpointer(directory).restore_latest(state) is None  # afresh


def test_restart_sets_every_file_of_the_run_aside(tmp_path, finished):
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    made = set(os.listdir(workdir))
    target = run_lib.restart_workdir(workdir)
    assert set(os.listdir(workdir)) <= {".lock", os.path.basename(target)}
    assert {"config.json", "checkpoints", "metrics.jsonl", "results.json", "tensorboard", "plots"} <= made
    assert set(os.listdir(target)) == made - {".lock"}
    assert run_lib.restart_workdir(workdir) is None  # nothing left to set aside


# 5. Re-running a finished run says so and leaves it byte for byte as it was.
def test_rerunning_a_finished_run_leaves_it_as_it_is(tmp_path, finished):
    workdir = str(tmp_path / "run")
    shutil.copytree(finished, workdir)
    before = {name: _read(os.path.join(workdir, name)) for name in ("results.json", "metrics.jsonl")}
    result = _launch(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "already complete" in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert {name: _read(os.path.join(workdir, name)) for name in before} == before
    with pytest.raises(run_lib.AlreadyComplete) as done:
        run_lib.Run(ppo_config.get_config("smoke"), workdir, unit="update")
    assert done.value.path == os.path.join(workdir, "results.json")
    assert done.value.results == json.loads(before["results.json"])


# 6. Strict JSON everywhere: non-finite values are null.
def test_json_files_are_strict(tmp_path, finished):
    nan, inf = float("nan"), float("inf")
    converted = strict_json({"a": nan, "b": [inf, 1.0, (2, -inf)], "c": np.float32(nan), "d": np.array([1.5, nan])})
    assert converted == {"a": None, "b": [None, 1.0, [2, None]], "c": None, "d": [1.5, None]}
    assert strict_json({"e": jnp.float32(2.0), "f": np.int64(3), "g": np.bool_(True), "h": "x"}) == {
        "e": 2.0,
        "f": 3,
        "g": True,
        "h": "x",
    }
    for name in ("results.json", "config.json"):
        _strict_load(_read(os.path.join(finished, name)).decode())

    workdir = str(tmp_path / "run")
    run = run_lib.Run(ppo_config.get_config("smoke"), workdir, unit="update")
    with run.steps(1):
        run.log(1, {"train/loss": nan, "train/episode_return": 3.0})
        run.end_step(1, {"w": jnp.zeros(2)}, n=1, seconds=0.0, save=False, last=True, postfix={})
    run.finish({"train/episode_return_mean": nan, "perf/steps_per_second": inf, "per_seed/x": [nan, 1.0]})
    results = _strict_load(_read(os.path.join(workdir, "results.json")).decode())
    assert results["train/episode_return_mean"] is None and results["perf/steps_per_second"] is None
    assert results["per_seed/x"] == [None, 1.0]
    (record,) = [_strict_load(line) for line in _read(os.path.join(workdir, "metrics.jsonl")).decode().splitlines()]
    assert record == {"step": 1, "train/loss": None, "train/episode_return": 3.0}

    writer = MetricsWriter(str(tmp_path / "writer"))
    writer.write(4, {"eval/return_mean": np.float32(inf)})
    writer.close()
    assert _strict_load(_read(tmp_path / "writer" / "metrics.jsonl").decode()) == {"step": 4, "eval/return_mean": None}


# 7. Recovering from a corrupt newest checkpoint is one warning line.
def test_stray_reports_of_failed_orbax_reads_are_dropped_and_others_kept():
    import logging as py_logging

    def record(message, error):
        return py_logging.LogRecord("asyncio", py_logging.ERROR, __file__, 1, message, None, (type(error), error, None))

    def raised_in(filename):  # an exception whose traceback has a frame in `filename`
        namespace = {}
        exec(compile("def fail():\n    raise ValueError('read failed')\n", filename, "exec"), namespace)
        try:
            namespace["fail"]()
        except ValueError as error:
            return error

    stray = checkpoint._DropStrayTasks()
    in_orbax = raised_in(f"{os.sep}site-packages{os.sep}orbax{os.sep}checkpoint{os.sep}reader.py")
    assert not stray.filter(record("Task exception was never retrieved", in_orbax))
    assert not stray.filter(record("Future exception was never retrieved", ValueError("tensorstore: torn manifest")))
    assert stray.filter(record("Task exception was never retrieved", raised_in("elsewhere.py")))  # not Orbax's
    assert stray.filter(record("Task was destroyed but it is pending!", in_orbax))  # not a failed read


def test_recovery_from_a_corrupt_checkpoint_is_one_warning_line(tmp_path, finished):
    workdir = _unfinished_copy(finished, tmp_path / "run")
    # A torn OCDBT manifest (Orbax 0.12's layout): the read fails with reads in flight, whose callbacks used to print
    # tracebacks ("Event loop is closed") around the warning, with Orbax's logged errors.
    manifest = os.path.join(workdir, "checkpoints", "8", "state", "manifest.ocdbt")
    with open(manifest, "r+b") as f:
        f.truncate(os.path.getsize(manifest) // 2)
    result = _launch(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = _lines(result.stderr)
    warnings = [line for line in lines if "not readable" in line]
    assert len(warnings) == 1 and "Traceback" not in result.stderr and len(lines) < 10, lines
    assert warnings[0].startswith(f"warning: checkpoint {workdir}/checkpoints/8 is not readable (")
    assert warnings[0].endswith(f"; using {workdir}/checkpoints/6")
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(finished, "results.json")) as f:
        assert results["params_sha256"] == json.load(f)["params_sha256"] and results["resumed_from_update"] == 6


# 8. Ctrl-C / SIGTERM outside the training steps: one line saying what was saved, exit 128 + signal.
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_compile_is_one_line(tmp_path, signum):
    proc = start_python([*SMOKE, f"--workdir={tmp_path / 'run'}"], cache=False)  # compiling takes seconds
    timer = threading.Timer(120, proc.kill)  # a hang fails the test rather than blocking it
    timer.start()
    try:
        first = proc.stderr.readline()
        assert first.startswith("workdir: "), first
        time.sleep(0.5)  # the run is building and compiling its programs
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=120)
    finally:
        timer.cancel()
    lines = _lines(stderr)
    assert proc.returncode == 128 + signum and "Traceback" not in stderr, stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("interrupted during "), lines
    assert "nothing to save yet" in lines[0] and f"{tmp_path}/run/checkpoints" in lines[0], lines


def test_interrupt_during_the_final_evaluation_says_the_checkpoint_is_saved(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    run = run_lib.Run(ppo_config.get_config("smoke"), str(tmp_path / "run"), unit="update")
    with run.steps(1):
        run.end_step(1, {"w": jnp.zeros(2)}, n=1, seconds=0.0, save=False, last=True, postfix={})
    message = (
        f"interrupted during the final evaluation; the training checkpoint at update 1 is saved in {tmp_path}/run/"
        "checkpoints; run the same command again to finish"
    )
    with pytest.raises(Interrupted, match=message) as interrupted:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises at once
    assert interrupted.value.signum == signal.SIGTERM
    assert os.listdir(tmp_path / "run" / "checkpoints") == ["1"]
    run.close()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_swallowed_mid_phase_still_stops_the_phase(capsys):
    """A StopAtOnce signal whose exception is dropped (as Python drops one raised in a gc callback) stops at the end of
    the phase, and the dropped exception prints nothing."""
    import types

    from lepton_jax.interrupt import StopAtOnce

    with pytest.raises(Interrupted) as raised:
        with StopAtOnce(lambda: "interrupted during start-up"):
            try:
                signal.raise_signal(signal.SIGINT)
            except Interrupted as dropped:  # what a gc callback does with it: report it as unraisable
                sys.unraisablehook(types.SimpleNamespace(exc_value=dropped, exc_type=Interrupted))
    assert raised.value.signum == signal.SIGINT and str(raised.value) == "interrupted during start-up"
    assert capsys.readouterr().err == ""


def test_resume_accepts_a_config_saved_before_a_technique_key_existed(tmp_path):
    """A workdir whose config.json predates a technique key resumes while that key is off, and refuses when it is
    on (the run did without it); any other difference is still refused, naming the key."""
    from lepton_jax import config as config_lib

    config = ppo_config.get_config("smoke")
    config_lib.technique_keys(config, "early_stopping")
    saved = config_lib.to_dict(config)
    del saved["patience"]
    with open(tmp_path / "config.json", "w") as f:
        json.dump(saved, f)
    config_lib.save_config(config, str(tmp_path))  # patience 0: off, as the saved run had it
    config.patience = 5
    with pytest.raises(UserError, match=r"changed: patience\)"):
        config_lib.save_config(config, str(tmp_path))
    config.patience, config.lr = 0, config.lr * 2
    with pytest.raises(UserError, match=r"changed: lr\)"):
        config_lib.save_config(config, str(tmp_path))
