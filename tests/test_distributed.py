"""One run on two processes (gloo on the CPU), as torchrun starts it: identical weights, the
averaged gradient is the big batch's, commands reach every rank at the same update, resume
across rank counts, a dead rank ends the job, and the torchrun command line works.

The two-rank scenario runs once (process start-up dominates on 2 cores) and its tests read
what each rank reported."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from a2c_tui.run import checkpoints as ckpt
from a2c_tui.learn.a2c import NonFiniteError, make_optimizer, update
from a2c_tui.learn.distributed import in_memory_order
from a2c_tui.run.metrics import read_jsonl
from a2c_tui.learn.model import ActorCritic
from a2c_tui.run.trainer import State, Trainer
from conftest import CONFIGS, cli_in_process, load_config

TORCHRUN = Path(sys.executable).with_name("torchrun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "A2C_TUI_COLLECTIVE_TIMEOUT": "60"}


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


# ----- fixed data: 2 ranks x 8 envs against 1 process x 16 envs -------------------------------
T, N, CLIP = 5, 16, 0.05  # a clip small enough to act: it must act on the averaged gradient


def fixed_batch():
    g = torch.Generator().manual_seed(3)
    obs = torch.randint(0, 256, (T, N, 4, 84, 84), dtype=torch.uint8, generator=g)
    actions = torch.randint(0, 6, (T, N), generator=g)
    targets = torch.randn(T, N, generator=g)
    return obs, actions, targets


def one_update(envs: slice, average_gradients=None, poison: bool = False):
    torch.manual_seed(0)
    model = ActorCritic((4, 84, 84), 6)
    optimizer = make_optimizer("rmsprop_tf", model.parameters(), 7e-4, 0.99, 1e-5)
    obs, actions, targets = (x[:, envs] for x in fixed_batch())
    if poison:
        targets = targets.clone()
        targets[0, 0] = float("nan")
    batch = obs.shape[0] * obs.shape[1]
    try:
        stats = update(model, optimizer, obs.reshape(batch, 4, 84, 84), actions.reshape(batch), targets.reshape(batch),
                       7e-4, 0.25, 0.01, CLIP, average_gradients)
    except NonFiniteError:
        stats = None
    return model, stats


# ----- the two-rank scenario ------------------------------------------------------------------
def scenario(rank: int, out: str, resume: str) -> dict:
    """Each rank: one update on its half of the fixed batch; a NaN on rank 1 only; then a
    cartpole run resumed from a one-process checkpoint, paused, edited, resumed and stopped
    from rank 0 while rank 1 follows."""
    from a2c_tui.learn import distributed

    group = distributed.join()
    report: dict = {}
    model, stats = one_update(slice(8 * rank, 8 * rank + 8), group.average_gradients)
    # numpy, not tensors: a queued tensor is shared through a file that dies with this process
    report["fixed"] = ({k: v.numpy().copy() for k, v in model.state_dict().items()}, stats["grad_norm"])
    poisoned, stats = one_update(slice(8 * rank, 8 * rank + 8), group.average_gradients, poison=rank == 1)
    torch.manual_seed(0)
    report["nan_skipped"] = stats is None and digest(poisoned) == digest(ActorCritic((4, 84, 84), 6))

    config = load_config("cartpole", Path(out))
    trainer = Trainer(config, resume=resume, tensorboard=False)
    report["resumed"] = (trainer.step, trainer.updates, digest(trainer.model))
    report["games_at_resume"] = trainer.scores.games
    report["env_seed"] = trainer.envs._seed  # env i plays seed + i
    local_games = []
    envs_step = trainer.envs.step

    def counting_step(actions):
        step = envs_step(actions)
        local_games.extend(score for _, score, _ in step.finished)
        return step

    trainer.envs.step = counting_step
    if rank == 0:
        trainer.start()
        wait_for(lambda: trainer.updates >= report["resumed"][1] + 20)
        trainer.pause()
        time.sleep(1.0)  # the update in flight ends; rank 1 would run ahead here if it did not follow
        report["paused_at"] = trainer.updates
        report["games_at_pause"] = (trainer.scores.games, len(local_games))
        trainer.weights().result(timeout=30)  # the loop is alive, and idle
        time.sleep(0.5)
        report["still_paused_at"] = trainer.updates
        trainer.load(resume).result(timeout=60)  # back to update 3, on every rank
        trainer.set_hparams(entropy_coef=0.05).result(timeout=30)
        trainer.resume()
        wait_for(lambda: trainer.updates >= 3 + 5)
        trainer.stop().result(timeout=60)
        trainer.close(timeout=60)
    else:
        paused, done = [], threading.Event()

        def watch():  # while paused no update runs: the count read after the state is the paused one
            while not done.wait(0.002):
                if trainer.state == State.PAUSED:
                    paused.append((trainer.updates, (trainer.scores.games, len(local_games))))
                    return

        watcher = threading.Thread(target=watch)
        watcher.start()
        trainer.run()
        done.set()
        watcher.join()
        report["paused_at"], report["games_at_pause"] = paused[0] if paused else (None, None)
    report.update(final_state=trainer.state, updates=trainer.updates, step=trainer.step, weights=digest(trainer.model),
                  hparams=dict(trainer.hparams), games=trainer.scores.games,
                  window=list(trainer.scores.scores), run_dir=str(trainer.run_dir))
    return report


def wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


def _rank_main(rank: int, world: int, port: int, results, fn, args) -> None:
    os.environ.update(rank_env(rank, world, port))
    from a2c_tui.learn import distributed

    try:
        results.put((rank, fn(rank, *args)))
    except BaseException:  # noqa: BLE001 - reported to the test
        results.put((rank, traceback.format_exc()))
    finally:
        distributed.leave()


def run_ranks(fn, *args, world: int = 2, timeout: float = 240) -> dict[int, dict]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, results, fn, args)) for r in range(world)]
    for p in procs:
        p.start()
    reports = {}
    try:
        deadline = time.monotonic() + timeout
        for _ in range(world):  # read before joining: a rank blocks until its report is read
            rank, report = results.get(timeout=max(1.0, deadline - time.monotonic()))
            assert not isinstance(report, str), f"rank {rank} failed:\n{report}"
            reports[rank] = report
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    return reports


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """A one-process cartpole checkpoint at update 3, then the scenario on two ranks."""
    out = tmp_path_factory.mktemp("dist")
    single = Trainer(load_config("cartpole", out / "single"), tensorboard=False)
    try:
        for _ in range(3):
            single.train_update()
        path = single._save_checkpoint("test")
        checkpoint_weights = digest(single.model)
    finally:
        single.metrics.close()
        single.envs.close()
    reports = run_ranks(scenario, str(out / "two"), str(path))
    return {"checkpoint": path, "checkpoint_weights": checkpoint_weights, "out": out, "reports": reports}


def test_averaged_gradient_update_equals_the_big_batch_update(two_ranks):
    big, big_stats = one_update(slice(0, N))
    for rank in (0, 1):
        weights, grad_norm = two_ranks["reports"][rank]["fixed"]
        assert grad_norm == pytest.approx(big_stats["grad_norm"], rel=1e-6)
        assert grad_norm > CLIP  # the clip acted, on the averaged gradient
        for name, tensor in big.state_dict().items():
            assert torch.allclose(torch.from_numpy(weights[name]), tensor, rtol=0, atol=1e-6), name
    # and a rank's own half alone would have stepped elsewhere
    half, _ = one_update(slice(0, 8))
    assert not torch.allclose(half.state_dict()["policy_head.weight"], big.state_dict()["policy_head.weight"],
                              rtol=0, atol=1e-6)


def test_a_nan_on_one_rank_skips_the_update_on_every_rank(two_ranks):
    assert two_ranks["reports"][0]["nan_skipped"] and two_ranks["reports"][1]["nan_skipped"]


def test_one_process_checkpoint_resumes_on_two_ranks(two_ranks):
    for rank in (0, 1):
        assert two_ranks["reports"][rank]["resumed"] == (3 * 8 * 5, 3, two_ranks["checkpoint_weights"])
    # each rank's 8 envs play other games: rank 1's follow rank 0's, as in one process of 16 envs
    assert two_ranks["reports"][1]["env_seed"] == two_ranks["reports"][0]["env_seed"] + 8


def test_ranks_on_a_node_share_its_cores():
    from a2c_tui.run.trainer import choose_threads

    smoke = load_config("smoke", Path("unused"))
    cores = os.cpu_count() or 1
    assert choose_threads(smoke, torch.device("cpu"), ranks_per_node=1) == cores
    assert choose_threads(smoke, torch.device("cpu"), ranks_per_node=2) == max(1, cores // 2)
    assert choose_threads(smoke.replace(**{"run.torch_threads": 3}), torch.device("cpu"), ranks_per_node=2) == 3


def test_pause_on_rank0_stops_both_ranks_at_the_same_update(two_ranks):
    r0, r1 = two_ranks["reports"][0], two_ranks["reports"][1]
    assert r0["paused_at"] == r0["still_paused_at"] == r1["paused_at"]
    assert r0["final_state"] == r1["final_state"] == State.STOPPED
    assert r0["updates"] == r1["updates"] >= 3 + 5  # the load on rank 0 took both back to update 3
    # the edit made on rank 0 while paused (after the load) reached rank 1
    assert r0["hparams"] == r1["hparams"] and r1["hparams"]["entropy_coef"] == 0.05


def test_weights_stay_bitwise_equal_and_steps_count_every_rank(two_ranks):
    r0, r1 = two_ranks["reports"][0], two_ranks["reports"][1]
    assert r0["weights"] == r1["weights"]  # after updates, a load on rank 0 and more updates
    assert r0["weights"] != two_ranks["checkpoint_weights"]
    assert r0["step"] == r1["step"] == 3 * 40 + (r0["updates"] - 3) * 2 * 40


def test_every_ranks_games_reach_the_window(two_ranks):
    r0, r1 = two_ranks["reports"][0], two_ranks["reports"][1]
    (games0, local0), (games1, local1) = r0["games_at_pause"], r1["games_at_pause"]
    assert local0 > 0 and local1 > 0
    # at the pause the window holds both ranks' games, on both ranks
    assert games0 == games1 == r0["games_at_resume"] + local0 + local1
    assert r0["games"] == r1["games"] and r0["window"] == r1["window"]


def test_rank0_alone_writes_the_run_directory_and_its_checkpoint_resumes_on_one_process(two_ranks):
    # the run goes on in the checkpoint's directory: one directory, rank 0's
    (run_dir,) = (two_ranks["out"] / "single").iterdir()
    assert not (two_ranks["out"] / "two").exists()
    r0 = two_ranks["reports"][0]
    assert Path(r0["run_dir"]) == run_dir == Path(two_ranks["reports"][1]["run_dir"])
    saved = ckpt.load(run_dir / "latest.pt")
    assert saved["step"] == r0["step"] and saved["updates"] == r0["updates"]
    resumed = Trainer(load_config("cartpole", two_ranks["out"]), resume=run_dir, tensorboard=False)
    try:
        assert (resumed.step, resumed.updates, digest(resumed.model)) == (r0["step"], r0["updates"], r0["weights"])
        assert resumed.hparams["entropy_coef"] == 0.05
        resumed.train_update()
        assert resumed.step == r0["step"] + 8 * 5  # one process: its own envs only
    finally:
        resumed.metrics.close()
        resumed.envs.close()


# ----- command line ---------------------------------------------------------------------------
def test_a_dead_rank_ends_the_job_with_a_checkpoint_and_its_name(tmp_path):
    port = free_port()
    config = str(CONFIGS / "cartpole.toml")
    ranks = []
    for rank in (0, 1):
        env = {**os.environ, **rank_env(rank, 2, port), "PYTHONWARNINGS": "ignore", "A2C_TUI_COLLECTIVE_TIMEOUT": "20"}
        ranks.append(subprocess.Popen(
            [sys.executable, "-m", "a2c_tui", "train", "--headless", "--config", config, "--set",
             f"run.out_dir={str(tmp_path)!r}", "--set", "run.log_every=1"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        wait_for(lambda: any(tmp_path.glob("*/metrics.jsonl")) and next(tmp_path.glob("*/metrics.jsonl")).stat().st_size
                 or ranks[0].poll() is not None, seconds=180)
        ranks[1].send_signal(signal.SIGKILL)
        out, err = ranks[0].communicate(timeout=120)  # must not hang: the collective fails or times out
    finally:
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert ranks[0].returncode == 1, err[-2000:]
    assert "Traceback" not in err
    assert "rank 1 stopped answering" in out + err
    (run_dir,) = tmp_path.iterdir()
    saved = ckpt.load(run_dir / "latest.pt")
    assert saved["step"] > 0


def test_torchrun_smoke_run_writes_one_run_directory_whose_checkpoint_evaluates(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    train = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "a2c_tui", "train", "--headless", "--config",
         str(CONFIGS / "smoke.toml"), "--set", f"run.out_dir={str(runs)!r}", "--set", "run.total_steps=320",
         "--set", "run.checkpoint_every=160", "--set", "run.log_every=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert train.returncode == 0, train.stderr[-3000:]
    assert "Traceback" not in train.stderr
    (run_dir,) = runs.iterdir()
    assert train.stdout.count("run directory:") == 1  # rank 0 speaks, rank 1 does not
    assert "2 ranks x 8 envs = 16 envs" in train.stdout
    assert "finished at step 320" in train.stdout
    assert {"step_160.pt", "step_320.pt", "latest.pt", "metrics.jsonl", "config.toml"} <= {p.name for p in run_dir.iterdir()}
    assert ckpt.load(run_dir / "latest.pt")["step"] == 320
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == [80, 160, 240, 320]  # 2 x 8 envs x 5 steps

    monkeypatch.chdir(tmp_path)  # eval in this process: the CLI's own start is pinned above and in test_cli
    ev = cli_in_process(capsys, "eval", str(run_dir / "latest.pt"), "--episodes", "1", "--envs", "1")
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "1 games" in ev.stdout


def test_what_cannot_run_on_several_ranks_is_refused_in_one_line(tmp_path):
    smoke = ["--config", str(CONFIGS / "smoke.toml"), "--set", f"run.out_dir={str(tmp_path / 'runs')!r}"]
    world = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    def run(args, env):  # both at once: each start imports torch, seconds on one core
        return subprocess.Popen([sys.executable, "-m", "a2c_tui", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env={**os.environ, **world, **env})

    procs = [run(smoke, {}), run(["train", "--headless", *smoke], {"A2C_TUI_COLLECTIVE_TIMEOUT": "soon"})]
    outputs = [p.communicate(timeout=300) for p in procs]
    app, timeout = (subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outputs))
    for result, says in ((app, "use `train --headless`"), (timeout, "A2C_TUI_COLLECTIVE_TIMEOUT='soon' is not allowed")):
        assert result.returncode == 2
        assert result.stderr.startswith("a2c-tui: error: ") and says in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs").exists()


def test_gradients_are_flattened_for_the_all_reduce_without_a_copy():
    # The Linear weights are laid out transposed and the convolutions channels-last (model.py):
    # flattening their gradients in logical order would copy 1.6M numbers each way per update.
    model = ActorCritic((4, 84, 84), 6)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    assert any(not p.grad.is_contiguous() for p in model.parameters())
    for p in model.parameters():
        view = in_memory_order(p.grad)
        assert sorted(view.shape) == sorted(p.grad.shape)
        assert view.reshape(-1).data_ptr() == p.grad.data_ptr() and view.is_contiguous()

