"""Config loading and validation; bad values through the real CLI: one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from a2c_tui import cli
from a2c_tui import config as cfg
from conftest import CONFIGS, files_under, run_cli

# name -> (--set override or None, TOML text replacing the [algo] header or None, the key the line must name)
BAD_CONFIGS = {
    "unknown key": ("algo.learning_rate=1e-3", None, "algo.learning_rate"),
    "unknown section": ("model.width=64", None, "model.width"),
    "unknown key in file": (None, "[algo]\nlearning_rate = 1e-3\n", "algo.learning_rate"),
    "wrong type word for int": ("env.num_envs=many", None, "env.num_envs"),
    "wrong type float for int": ("run.total_steps=1.5", None, "run.total_steps"),
    "wrong type string for float": ('algo.lr="fast"', None, "algo.lr"),
    "lr zero": ("algo.lr=0", None, "algo.lr"),
    "lr negative": ("algo.lr=-1e-3", None, "algo.lr"),
    "eps that is 0 in float32": ("algo.rms_eps=1e-300", None, "algo.rms_eps"),  # Adam: 0/0, NaN weights
    "num_envs zero": ("env.num_envs=0", None, "env.num_envs"),
    "gamma zero": ("algo.gamma=0", None, "algo.gamma"),
    "gamma above one": ("algo.gamma=1.01", None, "algo.gamma"),
    "unknown game": ("env.id=SpaceInvaderz", None, "env.id"),
    "gym env with continuous actions": ("env.id=Pendulum-v1", None, "env.id"),
    "half precision is not offered": ("run.precision=fp16", None, "run.precision"),
}
# One goes through the installed console script (a real process: its exit code, no traceback);
# the rest through cli.main in this process, the same code but for the start, which imports
# torch (seconds apiece on a busy machine).
THROUGH_SUBPROCESS = "unknown key"


def train_args(name: str, case_dir: Path) -> tuple[list[str], Path]:
    override, file_text, _ = BAD_CONFIGS[name]
    config_path = CONFIGS / "smoke.toml"
    if file_text is not None:
        config_path = case_dir / "bad.toml"
        config_path.write_text((CONFIGS / "smoke.toml").read_text().replace("[algo]\n", file_text, 1))
    out_dir = case_dir / "runs"
    args = ["train", "--headless", "--config", str(config_path), "--set", f"run.out_dir={str(out_dir)!r}"]
    if override is not None:
        args += ["--set", override]
    return args, out_dir


def problems_with(name: str, code: int, stderr: str, case_dir: Path, out_dir: Path) -> list[str]:
    """Exit code 2, exactly one stderr line naming the key, no traceback, nothing written."""
    key = BAD_CONFIGS[name][2]
    lines = stderr.strip().splitlines()
    problems = []
    if code != 2:
        problems.append(f"exit code {code}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    if "Traceback" in stderr:
        problems.append("traceback")
    if lines and key not in lines[0]:
        problems.append(f"key {key!r} not named")
    if out_dir.exists():
        problems.append("run directory created")
    left = [p.name for p in files_under(case_dir) if p.name != "bad.toml"]
    if left:
        problems.append(f"files written: {left}")
    return [f"{name}: {', '.join(problems)}; stderr={stderr.strip()[-300:]!r}"] if problems else []


def test_config_errors_through_the_cli(tmp_path):
    args, out_dir = train_args(THROUGH_SUBPROCESS, tmp_path)
    proc = run_cli(*args, cwd=tmp_path, timeout=180)
    assert not problems_with(THROUGH_SUBPROCESS, proc.returncode, proc.stderr, tmp_path, out_dir)


@pytest.mark.parametrize("name", [n for n in BAD_CONFIGS if n != THROUGH_SUBPROCESS])
def test_config_errors_through_cli_main(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args, out_dir = train_args(name, tmp_path)
    code = cli.main(args)
    captured = capsys.readouterr()
    assert not problems_with(name, code, captured.err, tmp_path, out_dir)


def test_error_message_says_what_is_allowed():
    with pytest.raises(cfg.ConfigError) as e:
        cfg.load(CONFIGS / "smoke.toml", ["algo.gamma=1.5"])
    assert str(e.value).startswith("algo.gamma") and "(0, 1]" in str(e.value)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.load(None, ["algo.lr_rate=1"])
    assert "algo.lr" in str(e.value) and "allowed keys" in str(e.value)
    assert "\n" not in str(e.value)


def test_boundaries_that_are_allowed():
    config = cfg.load(CONFIGS / "smoke.toml", ["algo.gamma=1", "env.num_envs=1", "algo.lr=1e-9"])
    assert config.algo.gamma == 1.0 and config.env.num_envs == 1 and config.algo.lr == 1e-9
    # an int where a float is expected is fine; the value becomes a float
    assert isinstance(cfg.load(None, ["algo.gamma=1"]).algo.gamma, float)


def test_overrides_parse_toml_literals_and_bare_words():
    assert cfg.parse_override("algo.lr=3e-4") == ("algo.lr", 3e-4)
    assert cfg.parse_override("env.num_envs = 8") == ("env.num_envs", 8)
    assert cfg.parse_override("env.id=Breakout") == ("env.id", "Breakout")
    assert cfg.parse_override("run.device=\"cpu\"") == ("run.device", "cpu")
    assert cfg.parse_override("env.clip_rewards=false") == ("env.clip_rewards", False)
    with pytest.raises(cfg.ConfigError):
        cfg.parse_override("algo.lr")


@pytest.mark.parametrize("preset", ["space_invaders", "breakout", "pong", "cartpole", "smoke"])
def test_presets_load_and_round_trip_through_toml(preset, tmp_path):
    config = cfg.load(CONFIGS / f"{preset}.toml")
    saved = tmp_path / "config.toml"
    saved.write_text(cfg.to_toml(config))
    assert cfg.load(saved) == config


def test_space_invaders_preset_has_the_anchor_hyperparameters():
    config = cfg.load(CONFIGS / "space_invaders.toml")
    algo = config.algo
    assert (config.env.id, config.env.num_envs, config.run.total_steps) == ("SpaceInvaders", 16, 10_000_000)
    assert (algo.n_steps, algo.gamma, algo.lr, algo.lr_schedule) == (5, 0.99, 7e-4, "linear")
    assert (algo.value_coef, algo.entropy_coef, algo.max_grad_norm) == (0.25, 0.01, 0.5)
    assert (algo.optimizer, algo.rms_alpha, algo.rms_eps) == ("rmsprop_tf", 0.99, 1e-5)


def test_a_long_refused_value_is_echoed_clipped():
    with pytest.raises(cfg.ConfigError) as refused:
        cfg.check_value("algo.lr", "x" * 800)
    assert len(str(refused.value)) < 80 and str(refused.value).endswith("… is not allowed: must be a number")
    assert refused.value.reason == "must be a number"
