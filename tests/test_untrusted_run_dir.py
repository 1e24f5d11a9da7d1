"""A run directory, a checkpoint and the numbers and paths a user types are hostile input
(issue 14, sections 1 and 5): symlinks and "../" names in a shared run directory never make
a command read or write outside it; out-of-range numbers, FIFOs, foreign tensors and
unwritable targets are refused in one line, before anything is played or written.

Commands run in this process through `cli.main` (the installed entry point's only code), so
each costs milliseconds on CartPole; Atari is used only where the command needs it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import threading
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from a2c_tui import cli
from a2c_tui import config as cfg
from a2c_tui import files
from a2c_tui.config import ConfigError
from a2c_tui.run import checkpoints as ckpt
from a2c_tui.run.trainer import State, Trainer
from conftest import CONFIGS, load_config


# ----- helpers -----------------------------------------------------------------------------
def run(*args: str) -> tuple[int, str]:
    """cli.main in this process: (exit code, stderr). Signal handlers it installs are put back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(list(args))
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return code, err.getvalue()


def refused(result: tuple[int, str], *words: str) -> bool:
    code, err = result
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("a2c-tui: error: ") and all(w in err for w in words)


def tree(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every entry under root (symlinks not followed): type and content digest or link target."""
    out: dict[str, tuple] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder, name)
            if skip is not None and (path == skip or skip in path.parents):
                continue
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def cartpole_run(out_dir: Path, steps: int = 80) -> Path:
    """A real CartPole run directory: 40 steps an update, a checkpoint every 40, stopped at
    `steps` of 160 (so a resume trains and saves again), an evaluation result beside step_40."""
    config = load_config("cartpole", out_dir, "run.total_steps=160", "run.checkpoint_every=40", "run.keep_last=5",
                         "run.log_every=1")
    trainer = Trainer(config)
    try:
        while trainer.step < steps:
            trainer._one_update()
    finally:
        trainer.envs.close()
        trainer.metrics.close()
    ckpt.record_evaluation(trainer.run_dir / "step_40.pt", {"mean": 1e9, "episodes": 1})
    return trainer.run_dir


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    return cartpole_run(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module")
def atari_checkpoint(tmp_path_factory) -> Path:
    """A SpaceInvaders checkpoint whose games end after 100 frames (record and eval are quick)."""
    config = load_config("smoke", tmp_path_factory.mktemp("atari"), "env.num_envs=1", "env.max_episode_frames=100")
    trainer = Trainer(config, tensorboard=False)
    try:
        return trainer.save_now().result(timeout=120)
    finally:
        trainer.envs.close()
        trainer.metrics.close()


def copy_run(template: Path, parent: Path, name: str = "run") -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copytree(template, parent / name, symlinks=True))


def save_payload(path: Path, payload: dict) -> Path:
    buffer = io.BytesIO()
    torch.save({**payload, "format": ckpt.FORMAT}, buffer)
    path.write_bytes(buffer.getvalue())
    return path


# ----- 1. the property: no command writes outside a crafted run directory ----------------
ENTRIES = ["index.json", "config.toml", "metrics.jsonl", "tb", "latest.pt", "best.pt", "step_40.pt",
           "step_80.pt", "step_40.eval.json", "step_120.pt", "step_160.pt"]


@st.composite
def crafted(draw):
    """(entries replaced by symlinks, index.json changes): a symlink points at the victim (a
    sibling run) by an absolute or a relative path, or ('@...') at a file of the run itself
    (itself included: a loop); index names are '..', absolute, nested."""
    links = draw(st.dictionaries(st.sampled_from(ENTRIES), st.tuples(
        st.sampled_from(["step_40.pt", "step_80.pt", "index.json", "config.toml", "metrics.jsonl", "tb", "secret",
                         "missing.pt", "", "@step_40.pt", "@step_80.pt", "@tb"]), st.booleans()), max_size=3))
    names = st.sampled_from(["../victim/step_40.pt", "../victim/best.pt", "..", "", "/", "sub/../../victim/index.json",
                             "VICTIM/step_80.pt", "../victim", "step_40.pt", 7, None])
    index = draw(st.dictionaries(st.sampled_from(["latest", "best"]), names, max_size=2))
    extra_files = draw(st.lists(names, max_size=2))
    return links, index, extra_files


def build(template: Path, parent: Path, links: dict, index: dict, extra_files: list) -> Path:
    victim = copy_run(template, parent, "victim")
    (victim / "secret").write_text("do not touch")
    run_dir = copy_run(template, parent)
    for entry, (target, absolute) in links.items():
        path = run_dir / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        if target.startswith("@"):
            path.symlink_to(target[1:])
        else:
            path.symlink_to(victim / target if absolute else Path("..", "victim", target))
    if index or extra_files:
        data = json.loads((victim / "index.json").read_text())
        data.update({k: str(victim / v[10:]) if isinstance(v, str) and v.startswith("VICTIM/") else v
                     for k, v in index.items()})
        for name in extra_files:
            data["files"][str(name).replace("VICTIM", str(victim))] = {"step": 40, "score": 1.0, "time": 0.0}
        if not (run_dir / "index.json").is_symlink():
            (run_dir / "index.json").write_text(json.dumps(data))
    return run_dir


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(crafted(), st.sampled_from(["", "latest.pt", "best.pt", "step_40.pt"]))
def test_no_command_writes_outside_a_crafted_run_directory(template, tmp_path_factory, crafted_dir, checkpoint):
    links, index, extra_files = crafted_dir
    parent = tmp_path_factory.mktemp("crafted")
    run_dir = build(template, parent, links, index, extra_files)
    videos = tmp_path_factory.mktemp("videos")
    before = tree(parent, skip=run_dir)
    target = str(run_dir / checkpoint)
    outcomes = {
        "eval": run("eval", target, "--episodes", "1", "--envs", "1"),
        "resume": run("train", "--headless", "--resume", target),
        "record": run("record", target, "--games", "1", "--out", str(videos / "v")),
    }
    handle_like = SimpleNamespace(run_dir=run_dir, state=State.STOPPED)
    from a2c_tui.run.handle import LocalHandle

    handle = LocalHandle(handle_like)
    for info in handle.list_checkpoints():
        with contextlib.suppress(ValueError):
            handle.delete_checkpoint(info.path)
    assert tree(parent, skip=run_dir) == before, outcomes
    for name, (code, err) in outcomes.items():
        assert code in (0, 2) and len(err.strip().splitlines()) <= (1 if code == 2 else 10), (name, code, err)
    if not (links or index or extra_files):
        assert outcomes["eval"][0] == 0  # an untouched run still works


# ----- 1. the run directory, one case at a time ------------------------------------------
def test_a_checkpoint_name_linking_to_another_run_directory_is_refused(template, tmp_path):
    """run/latest.pt is a symlink to a sibling run's directory: `--resume run/latest.pt` once
    trained in the sibling (found by the property test above on CI's draw)."""
    victim = copy_run(template, tmp_path, "victim")
    run_dir = copy_run(template, tmp_path)
    (run_dir / "latest.pt").unlink()
    (run_dir / "latest.pt").symlink_to(victim)
    before = tree(victim)
    for command in (["train", "--headless", "--resume"], ["eval"], ["record"]):
        assert refused(run(*command, str(run_dir / "latest.pt")), "symbolic link"), command
    assert tree(victim) == before


@pytest.mark.parametrize("entry", ["config.toml", "metrics.jsonl", "tb", "index.json", "tb/events.out.tfevents.1"])
def test_resume_refuses_a_run_file_that_is_a_symlink_out_and_writes_nothing(template, tmp_path, entry):
    victim = tmp_path / "victim"
    (victim / "tb").mkdir(parents=True)
    (victim / entry if entry != "tb" else victim / "tb" / "x").write_text("precious")
    run_dir = copy_run(template, tmp_path / "runs")
    path = run_dir / entry
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    path.symlink_to(victim / entry)
    before = tree(tmp_path)
    assert refused(run("train", "--headless", "--resume", str(run_dir)), entry)
    assert tree(tmp_path) == before


def test_eval_does_not_follow_index_names_out_of_the_run(template, tmp_path):
    """The finding: eval of best.pt whose index entry named another run's checkpoint rewrote
    that run's best.pt, index.json and .eval.json."""
    victim = copy_run(template, tmp_path, "victim")
    run_dir = copy_run(template, tmp_path)
    index = json.loads((run_dir / "index.json").read_text())
    (run_dir / "index.json").write_text(json.dumps({**index, "best": "../victim/step_40.pt"}))
    before = tree(victim)
    assert refused(run("eval", str(run_dir / "best.pt"), "--episodes", "1"), "index.json", "../victim/step_40.pt")
    assert tree(victim) == before
    # the listing and the trainer's own index reads simply drop such a name
    assert "best" not in ckpt.read_index(run_dir)
    assert ckpt.resolve(run_dir / "best.pt") == run_dir / "best.pt"


def test_metrics_are_appended_without_following_a_symlink(tmp_path):
    from a2c_tui.run.metrics import MetricsSink

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes").write_text("precious")  # even a link inside the run is not written through
    (tmp_path / "run" / "metrics.jsonl").symlink_to("notes")
    with pytest.raises(files.RefusedFile, match="symbolic link"):
        MetricsSink(tmp_path / "run", tensorboard=False)
    (tmp_path / "run" / "metrics.jsonl").unlink()
    (tmp_path / "run" / "metrics.jsonl").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(files.RefusedFile, match="outside the run directory"):
        MetricsSink(tmp_path / "run", tensorboard=False)
    assert (tmp_path / "run" / "notes").read_text() == "precious" and not (tmp_path / "elsewhere").exists()


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text(), st.text(), st.text())
def test_toml_writer_round_trips_any_text(name, out_dir, device, env_id, optimizer):
    """Every string field, whatever it holds (newlines, quotes, backslashes, controls, $),
    reads back as written and adds no key."""
    config = cfg.Config(cfg.RunConfig(name=name, out_dir=out_dir, device=device), cfg.EnvConfig(id=env_id),
                        cfg.AlgoConfig(optimizer=optimizer))
    assert tomllib.loads(cfg.to_toml(config)) == config.to_dict()


def test_resume_cleans_every_stale_temp_file(template, tmp_path):
    run_dir = copy_run(template, tmp_path)
    stale = [".index.json.k2j3h4.tmp", ".config.toml.abc.tmp", ".metrics.jsonl.x1.tmp", ".step_40.eval.json.q.tmp",
             ".best.pt.123.link", ".write-probe.zz.tmp"]
    for name in stale:
        (run_dir / name).write_text("half")
    (run_dir / "notes.tmp").write_text("the user's")
    trainer = Trainer(cfg.Config(), resume=run_dir, tensorboard=False)
    trainer.envs.close()
    trainer.metrics.close()
    assert [name for name in stale if (run_dir / name).exists()] == []
    assert (run_dir / "notes.tmp").exists()


# ----- 5. hostile numbers ------------------------------------------------------------------
@pytest.mark.parametrize("digits", ["9" * 400, "9" * 5000], ids=["400", "5000"])  # 5000: past int() string limit
def test_hundreds_of_digits_for_a_float_are_one_line(tmp_path, digits):
    from a2c_tui.tui.hparams import parse_field

    (tmp_path / "c.toml").write_text(f"[algo]\nlr = {digits}\n")
    for attempt in (lambda: cfg.load(None, [f"algo.lr={digits}"]), lambda: parse_field("algo.lr", digits),
                    lambda: cfg.load(tmp_path / "c.toml")):
        with pytest.raises(ConfigError) as e:
            attempt()
        assert "\n" not in str(e.value) and "algo.lr" in str(e.value) or "c.toml" in str(e.value)


def test_app_lr_field_refuses_hundreds_of_digits_without_crashing(tmp_path):
    import asyncio

    from textual.widgets import Input

    from a2c_tui.tui.app import A2CApp
    from tui_fakes import FakeHandle

    handle = FakeHandle(load_config("smoke", tmp_path), tmp_path / "run")
    sent = []
    handle.set_hparams = lambda **values: sent.append(values)

    async def scenario():
        app = A2CApp(handle, paused=True)
        async with app.run_test() as pilot:
            await pilot.press("2")
            field = app.query_one("#live-lr", Input)
            field.focus()
            field.value = "9" * 400
            await pilot.press("enter")
            await pilot.pause()
            return str(app.query_one("#hp-message").render())

    message = asyncio.run(scenario())
    assert sent == [] and "finite" in message


@pytest.mark.parametrize("seed", [-1, 2**31, 2**32, 2**64])
def test_eval_and_record_refuse_seeds_ale_cannot_take(atari_checkpoint, tmp_path, seed):
    assert refused(run("eval", str(atari_checkpoint), "--episodes", "1", "--seed", str(seed)), "--seed")
    assert refused(run("record", str(atari_checkpoint), "--seed", str(seed), "--out", str(tmp_path / "v")), "--seed")
    assert not (tmp_path / "v").exists()


def test_a_run_or_evaluation_too_big_for_memory_is_refused_before_allocating(atari_checkpoint, tmp_path,
                                                                             monkeypatch):
    from a2c_tui.run import memory

    monkeypatch.setattr(memory, "available_bytes", lambda: 2 << 30)  # this test, not this machine
    big = load_config("smoke", tmp_path / "runs", "algo.n_steps=10000", "env.num_envs=256")
    with pytest.raises(ConfigError, match=r"needs about [\d,.]+ GiB of memory .* 2.0 GiB available") as e:
        Trainer(big, tensorboard=False)
    assert "\n" not in str(e.value) and not (tmp_path / "runs").exists()
    assert refused(run("eval", str(atari_checkpoint), "--episodes", "5000", "--envs", "5000"), "5,000 envs", "1024")
    assert refused(run("eval", str(atari_checkpoint), "--episodes", "5000", "--envs", "1000"), "GiB", "1,000 envs")
    # what the presets ask for fits
    for preset in ("space_invaders", "breakout", "pong", "cartpole", "smoke"):
        memory.check_run(load_config(preset, tmp_path))
    memory.check_evaluation("SpaceInvaders", 64)


def test_memory_available_is_read_from_the_system():
    from a2c_tui.run import memory

    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < memory.available_bytes() <= total


# ----- 5. hostile paths --------------------------------------------------------------------
def _in_thread(fn, timeout: float = 30):
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    return thread.is_alive(), box


@pytest.mark.parametrize("kind", ["dev_zero", "fifo", "directory", "too_big"])
def test_configs_and_checkpoints_must_be_regular_files_within_a_limit(tmp_path, kind):
    if kind == "dev_zero":
        path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    elif kind == "directory":
        path = tmp_path / "dir.toml"
        path.mkdir()
    else:
        path = tmp_path / "big"
        with open(path, "wb") as f:
            f.truncate(files.CHECKPOINT_LIMIT + 1)  # sparse: no disk used
    for load, error in ((cfg.load, ConfigError), (ckpt.load, ckpt.CheckpointError)):
        if kind == "directory" and load is ckpt.load:
            continue  # a directory is a run directory there
        hung, box = _in_thread(lambda: load(path))
        if hung and kind == "fifo":
            with open(path, "wb"):
                pass  # let the blocked reader go
        assert not hung, f"{load.__module__}.load hangs on a {kind}"
        assert isinstance(box.get("error"), error) and "\n" not in str(box["error"]), box
        assert str(path) in str(box["error"])
        assert ("more than" if kind == "too_big" else "not a regular file") in str(box["error"])


@pytest.mark.parametrize("out_dir, words", [
    ("runs/" + "x" * 256, "255 bytes"),
    ("runs/caf\udce9", "UTF-8"),  # a Latin-1 byte on the command line (surrogateescape)
], ids=["long_name", "latin1_byte"])
def test_out_dir_that_no_file_system_or_terminal_takes_is_one_line(tmp_path, out_dir, words):
    result = run("train", "--headless", "--config", str(CONFIGS / "cartpole.toml"), "--set",
                 f"run.out_dir='{tmp_path}/{out_dir}'")
    assert refused(result, "run.out_dir", words)
    assert list(tmp_path.iterdir()) == []


def test_out_dir_tilde_is_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(load_config("cartpole", Path("~/runs")), tensorboard=False)
    trainer.envs.close()
    trainer.metrics.close()
    assert trainer.run_dir.parent == tmp_path / "home" / "runs"
    assert not (tmp_path / "~").exists()


def test_blackjack_v1_is_gymnasiums_blackjack_not_the_atari_game():
    from a2c_tui.learn.envs import atari_rom

    assert atari_rom("Blackjack-v1") is None and atari_rom("Blackjack") == "blackjack"
    with pytest.raises(ConfigError, match="Blackjack-v1 has Tuple"):
        cfg.load(None, ["env.id=Blackjack-v1"])


def _foreign(atari_checkpoint: Path, cartpole: Path, directory: Path) -> dict[str, Path]:
    """SpaceInvaders metadata over tensors that are not a SpaceInvaders model."""
    directory.mkdir(parents=True, exist_ok=True)
    good = ckpt.load(atari_checkpoint)
    mlp = ckpt.load(cartpole)["model"]
    head = {**good["model"], "policy_head.weight": torch.zeros(4, 512), "policy_head.bias": torch.zeros(4)}
    missing = {k: v for k, v in good["model"].items() if k != "value_head.bias"}
    moments = {**good["optimizer"], "state": {0: {"square_avg": torch.ones(3, 3)}}}
    return {name: save_payload(directory / f"{name}.pt", {**good, **change}) for name, change in (
        ("mlp", {"model": mlp}), ("other_head", {"model": head}), ("missing_key", {"model": missing}),
        ("optimizer_shapes", {"optimizer": moments}))}


def test_foreign_tensors_under_valid_metadata_are_one_line_everywhere(atari_checkpoint, template, tmp_path):
    bad = _foreign(atari_checkpoint, template / "step_40.pt", tmp_path / "bad")
    trainer = Trainer(load_config("smoke", tmp_path / "runs", "env.num_envs=1"), tensorboard=False)
    try:
        for name, path in bad.items():
            words = ("optimizer",) if name == "optimizer_shapes" else ("weights",)
            if name != "optimizer_shapes":  # eval and record use only the weights
                assert refused(run("eval", str(path), "--episodes", "1"), path.name, *words), name
                assert refused(run("record", str(path), "--games", "1", "--out", str(tmp_path / "v")), *words), name
            with pytest.raises(ckpt.CheckpointError, match="|".join(words)):
                Trainer(cfg.Config(), resume=path, tensorboard=False)
            with pytest.raises(ckpt.CheckpointError, match="|".join(words)):
                trainer.load(path).result(timeout=60)  # the app's "load"
    finally:
        trainer.envs.close()
        trainer.metrics.close()
    assert not (tmp_path / "v").exists()  # record makes --out only for a checkpoint it accepts


@pytest.mark.parametrize("field, value", [("step", -10**9), ("updates", -1), ("step", 1.5), ("score", "high"),
                                          ("best_score", math.nan), ("base_lr", -1.0), ("elapsed", math.inf),
                                          ("scores", {"scores": ["x"], "lengths": [], "games": 1}),
                                          ("scores", {"scores": [], "lengths": [], "games": -5}),
                                          ("n_actions", 0), ("obs_shape", [4, -84, 84]),
                                          ("hparams", {"lr": 50.0}), ("hparams", {"gamma": "0.99"})])
def test_every_field_read_from_a_checkpoint_is_checked(template, tmp_path, field, value):
    path = save_payload(tmp_path / "step_40.pt", {**ckpt.load(template / "step_40.pt"), field: value})
    with pytest.raises(ckpt.CheckpointError, match=field) as e:
        ckpt.load(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_eval_json_is_checked_before_playing(template, tmp_path):
    run_dir = copy_run(template, tmp_path)
    (run_dir / "notes.txt").write_text("the user's")
    (tmp_path / "other_run").mkdir()
    before = tree(run_dir)
    (tmp_path / "a_dir").mkdir()
    for target, words in ((tmp_path / "a_dir", "directory"), (tmp_path / "missing" / "r.json", "not a directory"),
                          (run_dir / "step_40.pt", "checkpoint"), (tmp_path / "other_run" / "best.pt", "checkpoint"),
                          (run_dir / "index.json", "overwrite"), (run_dir / "notes.txt", "overwrite"),
                          (run_dir / "step_80.eval.json", "overwrite")):
        assert refused(run("eval", str(run_dir / "step_40.pt"), "--episodes", "1", "--json", str(target)),
                       "--json", words), target
    assert tree(run_dir) == before  # nothing played: no result beside the checkpoint either
    assert run("eval", str(run_dir / "step_40.pt"), "--episodes", "1", "--json", str(tmp_path / "r.json"))[0] == 0
    assert json.loads((tmp_path / "r.json").read_text())["episodes"] == 1


@contextlib.contextmanager
def read_only(directory: Path):
    """`directory` read-only even for root (a read-only bind mount), else by its mode."""
    if os.geteuid() == 0:
        if subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True).returncode:
            pytest.skip("cannot bind-mount here")
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True, capture_output=True)
            yield
        finally:
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)
    else:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)


def test_read_only_run_directory_and_out_are_one_line(template, atari_checkpoint, tmp_path):
    run_dir = copy_run(template, tmp_path)
    writable = copy_run(template, tmp_path, "writable")
    videos = tmp_path / "videos"
    videos.mkdir()
    with read_only(run_dir), read_only(videos):
        before = tree(tmp_path)
        assert refused(run("eval", str(run_dir), "--episodes", "1"), str(run_dir), "not writable")
        assert refused(run("train", "--headless", "--resume", str(run_dir)), str(run_dir), "not writable")
        assert refused(run("eval", str(writable), "--episodes", "1", "--json", str(videos / "r.json")), "--json",
                       "not writable")
        assert refused(run("record", str(atari_checkpoint), "--games", "1", "--out", str(videos)), str(videos),
                       "not writable")
        assert tree(tmp_path) == before
    # record reads a read-only run directory and writes only to --out
    atari_run = atari_checkpoint.parent
    with read_only(atari_run):
        assert run("record", str(atari_checkpoint), "--games", "1", "--out", str(videos))[0] == 0
    assert len(list(videos.glob("*.mp4"))) == 1
