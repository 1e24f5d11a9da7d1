"""A run is a process of its own; apps attach and detach (a2c_tui.run.service, tui/remote.py).

In-process tests serve a real trainer on a real socket (RunService) and talk to it as apps
do; process tests start the real `a2c-tui` and leave no process behind (the `runtime`
fixture kills whatever holds a run lock it knows of).
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2c_tui.run import protocol, service
from a2c_tui.run.service import RunLock, RunService, ServiceError
from a2c_tui.tui.remote import RemoteHandle
from conftest import CLI, CONFIGS, ROOT, cli_in_process, drain_terminal, load_config, wait_until

SMOKE = ["--config", str(CONFIGS / "smoke.toml"), "--set", "run.total_steps=1000000", "--set", "env.num_envs=2",
         "--set", "run.log_every=1", "--set", "env.max_episode_frames=400", "--set", "run.checkpoint_every=400"]


@pytest.fixture
def served(runtime, tmp_path):
    """A real trainer (smoke config, 2 envs, short games) served on its socket in this process, running."""
    from a2c_tui.run.handle import LocalHandle

    config = load_config("smoke", tmp_path / "runs", "run.total_steps=1000000", "env.num_envs=2",
                         "env.max_episode_frames=400", "run.checkpoint_every=1000000", "run.log_every=1")
    handle = LocalHandle.create(config)
    svc = RunService(handle)
    svc.open()
    handle.start(paused=False)
    yield handle, svc
    svc.close()
    handle.close(timeout=10)


def raw_client(run_dir, subscribe=False) -> socket.socket:
    sock = service.connect(run_dir)
    sock.sendall(protocol.command(0, "hello", subscribe=subscribe))
    return sock


def replies(sock: socket.socket, count: int, timeout: float = 10) -> list[dict]:
    """The next `count` reply messages on a raw connection (snapshots and events skipped)."""
    sock.settimeout(timeout)
    reader = sock.makefile("rb")
    found = []
    while len(found) < count:
        line = reader.readline()
        if not line:
            break
        message = json.loads(line)
        if message.get("type") == "reply":
            found.append(message)
    return found


def steps(run_dir) -> int:
    return protocol.snapshot_from(service.request(run_dir, "status")["snapshot"]).step


# ----- in process: the protocol, clients, security ------------------------------------------
def test_two_apps_see_each_others_commands(served):
    handle, _ = served
    first, second = RemoteHandle.attach(handle.run_dir), RemoteHandle.attach(handle.run_dir)
    seen = []
    second.subscribe(lambda item: seen.append(item))
    try:
        assert first.pause() is True
        wait_until(lambda: any(getattr(i, "state", None) == "PAUSED" for i in seen), 10, "second app sees PAUSED")
        assert any(getattr(i, "text", "") == "paused" for i in seen)  # the event too
        assert second.state == "PAUSED" and handle.state == "PAUSED"
        assert second.resume() is True
        wait_until(lambda: first.state == "RUNNING", 10, "first app sees RUNNING")
        assert first.set_hparams(entropy_coef=0.02).result(10)["entropy_coef"] == 0.02
    finally:
        first.close()
        second.close()


def test_attach_receives_config_history_and_recent_log(served):
    handle, _ = served
    wait_until(lambda: (handle.run_dir / "metrics.jsonl").exists() and handle.snapshot().step >= 200, 60, "records")
    remote = RemoteHandle.attach(handle.run_dir)
    try:
        assert remote.config == handle.config
        assert remote.run_dir == handle.run_dir.resolve()
        assert len(remote.history()) >= 1
        assert any("run " in e.text for e in remote.recent_log)
        assert remote.snapshot().step >= 200
    finally:
        remote.close()


def test_socket_and_runtime_directory_are_private(served, runtime):
    handle, svc = served
    assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(runtime / "runs").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(svc.socket_path).st_mode) == 0o600
    runtime.chmod(0o755)
    try:
        with pytest.raises(ServiceError, match="not private"):
            service.runtime_dir()
    finally:
        runtime.chmod(0o700)


def test_a_peer_of_another_uid_is_refused(served, monkeypatch):
    handle, _ = served
    with monkeypatch.context() as patch:
        patch.setattr(service, "peer_uid", lambda sock: os.getuid() + 1)  # what SO_PEERCRED says of a stranger
        sock = service.connect(handle.run_dir)  # refused before it can say anything
        [reply] = replies(sock, 1)
        assert "permission denied" in reply["error"]
        assert sock.recv(1) == b""  # and the connection is closed
    assert steps(handle.run_dir) >= 0  # our own uid still gets in


def test_peer_uid_reads_the_kernels_credentials():
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert service.peer_uid(left) == os.getuid()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    st.sampled_from([b'{"v":1,"id":5,"cmd":"pause"', b'[1,2]', b'{"v":1,"id":"x","cmd":"pause"}',
                     b'{"v":1,"id":3,"cmd":"rm -rf"}', b'{"v":2,"id":3,"cmd":"status"}',
                     b'{"v":1,"id":3,"cmd":"load","args":{"path":5}}', b'{"v":1,"id":3,"cmd":"evaluate","args":{}}',
                     b'{"v":1,"id":3,"cmd":"set_hparams","args":{"values":{"lr":"1e999"}}}',
                     b'{"v":1,"id":3,"cmd":"set_hparams","args":{"values":{"optimizer":1}}}',
                     b'{"v":1,"id":3,"cmd":"load","args":{"path":"/etc/passwd"}}',
                     b'{"v":1,"id":3,"cmd":"delete","args":{"path":"../../x.pt"}}',
                     b'{"v":1,"id":true,"cmd":"status"}', b'{"a":' * 5000, b"x" * 200_000]),
))
def test_garbage_gets_an_error_for_that_client_only(served, junk):
    handle, svc = served
    before = handle.snapshot().step
    with raw_client(handle.run_dir) as bad:
        bad.sendall(junk.replace(b"\n", b" ") + b"\n" + protocol.command(9, "status"))
        got = replies(bad, 3, timeout=20)
        # the line got an error (or was a valid command); the service still answers this client
        assert any(r.get("id") == 9 and "result" in r for r in got), got
        for r in got:
            assert "error" in r or "result" in r
            if "error" in r:
                assert isinstance(r["error"], str) and "\n" not in r["error"] and len(r["error"]) < 400
    assert steps(handle.run_dir) >= before  # another client is fine and the run goes on
    assert handle.state == "RUNNING" and svc._thread.is_alive()


def test_commands_with_paths_outside_the_run_are_refused(served, tmp_path):
    handle, _ = served
    outside = tmp_path / "elsewhere.pt"
    outside.write_bytes(b"not yours")
    with raw_client(handle.run_dir) as sock:
        sock.sendall(protocol.command(1, "delete", path=str(outside))
                     + protocol.command(2, "load", path="../elsewhere.pt")
                     + protocol.command(3, "evaluate", path=str(outside), episodes=1))
        got = {r["id"]: r for r in replies(sock, 4)}
    assert all("not a checkpoint of this run" in got[i]["error"] for i in (1, 2, 3))
    assert outside.read_bytes() == b"not yours"


def test_a_client_that_stops_reading_is_bounded_and_slows_nothing(served):
    handle, svc = served
    stalled = raw_client(handle.run_dir, subscribe=True)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    watcher = RemoteHandle.attach(handle.run_dir)
    seen = []
    watcher.subscribe(lambda item: seen.append(item))
    try:
        start = handle.snapshot().step
        wait_until(lambda: handle.snapshot().step >= start + 400, 60, "training goes on")
        snapshots = [i for i in seen if hasattr(i, "step")]
        assert len(snapshots) >= 2 and snapshots[-1].step > snapshots[0].step  # the reader is served
        # Flood events faster than anyone reads: the stalled client is cut off at the bound, not buffered forever.
        # more than kernel buffers and the bound hold, at a pace a reading client keeps up with
        for n in range(3 * service.MAX_BACKLOG):
            svc.loop.call_soon_threadsafe(svc._event, "info", f"flood {n} " + "x" * 200)
            if n % 100 == 0:
                time.sleep(0.05)
        wait_until(lambda: all(c.dropped or len(c.backlog) < 10 for c in list(svc.clients)), 30,
                   "the flood drained or its client dropped")
        assert all(c.backlog_bytes <= service.MAX_BACKLOG_BYTES for c in svc.clients)
        assert watcher.connected  # the reading app kept up and stays attached
        wait_until(lambda: sum(1 for c in svc.clients if c.subscribed) == 1, 10, "the stalled client dropped")
        assert handle.state == "RUNNING"
    finally:
        stalled.close()
        watcher.close()


def test_an_evaluation_outlives_the_app_that_started_it(served):
    handle, svc = served
    saved = handle.save_now().result(60)
    remote = RemoteHandle.attach(handle.run_dir)
    reply = remote._call("evaluate", path=str(saved), episodes=4, envs=2).result(10)
    remote.close()  # detach while it plays
    again = RemoteHandle.attach(handle.run_dir)
    try:
        if svc.evaluation is not None:  # still playing: the new app is told, and can follow it to the end
            assert again.running_evaluation is not None and again.running_evaluation.id == reply["id"]
            result = again.follow_evaluation(reply["id"])
            assert result["episodes"] == 4
        wait_until(lambda: (saved.with_suffix(".eval.json")).exists(), 120, "the result beside the checkpoint")
        assert json.loads(saved.with_suffix(".eval.json").read_text())["episodes"] == 4
    finally:
        again.close()


def test_the_service_ends_when_a_stop_is_answered(served):
    handle, svc = served
    done = threading.Thread(target=svc.wait, daemon=True)
    done.start()
    path = service.request(handle.run_dir, "stop", timeout=60)
    assert path and Path(path).exists()
    done.join(10)
    assert not done.is_alive() and handle.state == "STOPPED"


# ----- processes: the real command ---------------------------------------------------------
def run_cli(*args, timeout=120):
    return subprocess.run([str(CLI), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def live_run(out_dir: Path, timeout: float = 120) -> Path:
    run_dir = wait_until(lambda: next((e.run_dir for e in service.known_runs() if e.state == "RUNNING"), None),
                         timeout, "a live run")
    assert run_dir.parent == out_dir.resolve()
    return run_dir


def test_the_app_starts_a_new_run_from_its_config_and_keeps_no_copy_of_it(runtime, tmp_path):
    """What the app does for a new run: the config goes to the process as a file in the private
    runtime directory, which is gone once the run is up."""
    config = load_config("smoke", tmp_path / "runs", "run.total_steps=1000000", "env.num_envs=2")
    run_dir = service.start(config)
    try:
        assert RunLock.held(run_dir) and run_dir.parent == tmp_path / "runs"
        assert not list(runtime.glob("new-run-*.toml"))
        assert (run_dir / "config.toml").exists()
    finally:
        service.request(run_dir, "stop", timeout=120)
        wait_until(lambda: not RunLock.held(run_dir), 60, "the run ended")


def test_the_run_survives_its_app_and_stop_ends_it(runtime, tmp_path):
    """The app in a terminal; the terminal goes (SIGHUP): the run trains on, an app attaches to its
    history, `a2c-tui stop` saves and ends it."""
    out_dir = tmp_path / "runs"
    master, slave = pty.openpty()
    app = subprocess.Popen([str(CLI), *SMOKE, "--set", f'run.out_dir="{out_dir}"'], cwd=ROOT, stdin=slave,
                           stdout=slave, stderr=slave, start_new_session=True,
                           env={**os.environ, "PYTHONWARNINGS": "ignore", "TERM": "xterm-256color"})
    os.close(slave)
    drain = threading.Thread(target=drain_terminal, args=(master,), daemon=True)
    drain.start()
    try:
        run_dir = live_run(out_dir)
        wait_until(lambda: steps(run_dir) > 0, 60, "training")
        wait_until(lambda: service.request(run_dir, "status")["clients"] == 1, 60, "the app attached")
        app.send_signal(signal.SIGHUP)
        assert app.wait(30) == 0
        before = steps(run_dir)
        wait_until(lambda: steps(run_dir) > before, 60, "the step counter rising without the app")
        remote = RemoteHandle.attach(run_dir)
        try:
            assert remote.history() and remote.snapshot().step > before
        finally:
            remote.close()
        stopped = run_cli("stop", run_dir.name)
        assert stopped.returncode == 0, stopped.stderr
        assert "saved step_" in stopped.stdout
        assert not RunLock.held(run_dir)
        assert not service.socket_path(run_dir).exists() and not service.registry_path(run_dir).exists()
        listing = run_cli("ls")
        assert listing.returncode == 0 and "no runs on this box" in listing.stdout
        saved = max(int(p.stem.split("_")[1]) for p in run_dir.glob("step_*.pt"))
        assert saved > before
        assert "saved step_" in (run_dir / "service.log").read_text()
    finally:
        if app.poll() is None:
            app.kill()
        os.close(master)


def test_a_second_writer_is_refused_and_a_killed_run_resumes(runtime, tmp_path, capfd):
    """Also the default run's end-to-end kill -9 check (the kill loops in test_faults are slow):
    after a SIGKILL every checkpoint loads and `--resume` starts at the newest one."""
    from a2c_tui.run import checkpoints as ckpt

    out_dir = tmp_path / "runs"
    first = subprocess.Popen([str(CLI), "train", "--headless", *SMOKE, "--set", f'run.out_dir="{out_dir}"'],
                             cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        run_dir = live_run(out_dir)
        wait_until(lambda: list(run_dir.glob("step_*.pt")), 90, "a checkpoint")
        second = cli_in_process(capfd, "train", "--headless", "--resume", str(run_dir))  # the lock is the other process's
        assert second.returncode == 2
        assert len(second.stderr.strip().splitlines()) == 1 and "a2c-tui attach" in second.stderr
        first.kill()  # kill -9
        first.wait(10)
        newest = max(ckpt.load(path)["step"] for path in run_dir.glob("*.pt"))  # none corrupt
        listing = run_cli("ls")
        assert run_dir.name in listing.stdout and "dead" in listing.stdout
        resumed = subprocess.Popen([str(CLI), "train", "--headless", "--resume", str(run_dir)], cwd=ROOT,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True, text=True)
        try:
            live_run(out_dir)
            stopped = run_cli("stop")  # the only live run
            assert stopped.returncode == 0, stopped.stderr
            output = resumed.communicate(timeout=60)[0]
            assert resumed.returncode == 0, output
            started_at = int(re.search(r"\brun \S+ at step ([\d,]+) of", output).group(1).replace(",", ""))
            stopped_at = int(re.search(r"stopped at step ([\d,]+)", output).group(1).replace(",", ""))
            assert started_at == newest and stopped_at >= started_at
            assert ckpt.load(run_dir / "latest.pt")["step"] == stopped_at
        finally:
            if resumed.poll() is None:
                resumed.kill()
    finally:
        if first.poll() is None:
            first.kill()


def test_ls_attach_and_stop_with_no_run_alive(runtime):
    listing = run_cli("ls")
    assert listing.returncode == 0 and "no runs on this box" in listing.stdout
    for command in (["attach"], ["stop"], ["stop", "nosuchrun"]):
        proc = run_cli(*command)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_headless_run_trains_even_where_apps_cannot_attach(runtime, tmp_path, capfd):
    runtime.chmod(0o755)  # not private: no socket is opened there
    proc = cli_in_process(capfd, "train", "--headless", "--config", str(CONFIGS / "smoke.toml"), "--set",
                          "run.total_steps=400", "--set", "env.num_envs=2", "--set", f'run.out_dir="{tmp_path / "runs"}"')
    assert proc.returncode == 0, proc.stderr
    assert "apps cannot attach to this run" in proc.stdout and "not private" in proc.stdout
    assert "finished at step" in proc.stdout
    assert list((tmp_path / "runs").glob("*/step_*.pt"))
    assert not list(runtime.glob("*.sock"))


def test_a_command_sent_as_the_service_goes_fails_once_without_an_error_of_its_own():
    """The reader fails every waiting command when the socket closes; a send that breaks at
    the same moment must not fail the same future again (InvalidStateError in the app)."""
    import itertools

    handle = RemoteHandle.__new__(RemoteHandle)
    handle._ids, handle._waiting, handle._subscribers = itertools.count(2), {}, []
    handle._lock, handle._send_lock = threading.Lock(), threading.Lock()
    handle.connected, handle.stop_requested = True, False

    class Closing:
        def sendall(self, data):
            handle._disconnected("the service ended")  # the reader thread, in between
            raise BrokenPipeError(32, "Broken pipe")

    handle._sock = Closing()
    future = handle._call("checkpoints")
    with pytest.raises(ServiceError, match="service is gone"):
        future.result(timeout=1)
