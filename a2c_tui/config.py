"""Typed run configuration: dataclasses, TOML load/save, `--set` overrides, validation.

Every problem with a config is reported as a `ConfigError` whose message is one line
naming the key and what is allowed; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from a2c_tui import files


FLOAT32_TINY = 2.0**-126  # the smallest normal float32


class ConfigError(ValueError):
    """A config key has a value that is not allowed (message: one line). `reason` is the
    message without the key and value: "must be a number"."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


EVAL_SEED = 12345  # evaluations' default: the same seed plays the same games, so checkpoints compare fairly
EVAL_ENVS = 16  # evaluations' default envs: 100 games on 16 ran 1.32x faster than on 8 on 2 cores (BENCHMARKS.md)
ECHO_MAX = 30  # characters of a refused value repeated in a message


def echo(value: Any) -> str:
    """A refused value as messages repeat it: its repr, clipped (800 typed characters would bury the reason)."""
    text = repr(value)
    return text if len(text) <= ECHO_MAX else text[:ECHO_MAX - 1] + "…"


def not_allowed(key: str, value: Any, reason: str) -> ConfigError:
    return ConfigError(f"{key} = {echo(value)} is not allowed: {reason}", reason)


@dataclass
class RunConfig:
    name: str = "space_invaders"
    total_steps: int = 10_000_000
    seed: int = 1
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    precision: str = "auto"  # "fp32" | "bf16" | "auto" (bf16 for images where bf16 is native): model.resolve_precision
    checkpoint_every: int = 500_000  # agent steps between periodic checkpoints
    keep_last: int = 5  # periodic checkpoints kept (latest/best are kept apart)
    log_every: int = 100  # updates between diagnostics records
    torch_threads: int = 0  # 0 = choose from the core count (see trainer.choose_threads)
    tf32: str = "auto"  # "auto" | "on" | "off": TF32 matmuls and convolutions on CUDA (auto: on); no effect on the CPU
    compile: str = "auto"  # "auto" | "off" | "act" | "all": torch.compile the acting forward (and the update's)
    out_dir: str = "checkpoints"
    eval_every: int = 0  # agent steps between evaluations beside training (0 = none)
    eval_episodes: int = 10  # whole games in each of those evaluations


@dataclass
class EnvConfig:
    id: str = "SpaceInvaders"
    num_envs: int = 16
    num_threads: int = 0  # ALE's C++ thread pool; 0 = one per core
    overlap: str = "auto"  # "auto" | "on" | "off": two env groups, one steps while the network acts for the other
    noop_max: int = 30
    max_episode_frames: int = 108_000
    clip_rewards: bool = True  # learner sees sign(r); scores stay raw


@dataclass
class AlgoConfig:
    n_steps: int = 5
    gamma: float = 0.99
    gae_lambda: float = 1.0  # 1.0 = plain n-step targets
    lr: float = 7e-4
    lr_schedule: str = "linear"  # "linear" | "constant"
    value_coef: float = 0.25
    entropy_coef: float = 0.01
    max_grad_norm: float = 0.5
    optimizer: str = "rmsprop_tf"  # "rmsprop_tf" | "rmsprop" | "adam"
    rms_alpha: float = 0.99
    rms_eps: float = 1e-5


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def replace(self, **overrides: Any) -> Config:
        """A copy with dotted-key overrides applied and validated: replace(**{"algo.lr": 1e-3})."""
        return from_dict(self.to_dict(), overrides)


SECTIONS = {"run": RunConfig, "env": EnvConfig, "algo": AlgoConfig}

# Hyperparameters the trainer accepts while running (applied at the next update).
LIVE_KEYS = ("lr", "entropy_coef", "value_coef", "max_grad_norm", "gamma")

# How a run uses the machine, not what it learns: the only keys `--set` may change when a
# run is resumed (e.g. on a bigger box). Everything else comes from the checkpoint.
RESUME_KEYS = ("run.device", "run.precision", "run.torch_threads", "env.num_threads", "run.checkpoint_every",
               "run.keep_last", "run.log_every", "run.eval_every", "run.eval_episodes", "run.tf32", "run.compile",
               "env.overlap")


def _check_range(key: str, value: Any) -> None:
    """Raise ConfigError if `value` is outside what `key` allows."""

    def need(ok: bool, allowed: str) -> None:
        if not ok:
            raise not_allowed(key, value, f"must be {allowed}")

    if isinstance(value, float):
        need(math.isfinite(value), "a finite number")
    match key:
        case "run.name":
            # It names a directory: <name>-<date>-<time> must stay within a file name's 255 bytes.
            need(bool(value) and all(c.isalnum() or c in "-_." for c in value) and not value.startswith(".")
                 and len(value.encode()) <= 200, "a non-empty name of letters, digits, '-', '_' or '.' "
                                                 "(at most 200 bytes)")
        case "run.total_steps":
            need(value >= 1, "an integer >= 1")
        case "run.seed":
            # ALE takes 32-bit seeds: env i gets seed + i, and a resumed run seed + updates.
            need(0 <= value <= 2**30, "an integer from 0 to 2**30")
        case "run.device":
            need(value in ("auto", "cpu", "cuda"), 'one of "auto", "cpu", "cuda"')
        case "run.precision":
            need(value in ("fp32", "bf16", "auto"), 'one of "fp32", "bf16", "auto"')
        case "run.tf32" | "env.overlap":
            need(value in ("auto", "on", "off"), 'one of "auto", "on", "off"')
        case "run.compile":
            need(value in ("auto", "off", "act", "all"), 'one of "auto", "off", "act", "all"')
        case "run.checkpoint_every" | "run.log_every":
            need(value >= 1, "an integer >= 1")
        case "run.keep_last":
            need(value >= 1, "an integer >= 1")
        case "run.eval_every":
            need(0 <= value <= 2**62, "an integer >= 0 (0 = no evaluations)")
        case "run.eval_episodes":
            need(1 <= value <= 10_000, "an integer from 1 to 10000")
        case "run.torch_threads" | "env.num_threads":
            need(0 <= value <= 1024, "an integer from 0 to 1024 (0 = automatic)")
        case "run.out_dir":
            need(bool(value) and "\x00" not in value, "a non-empty path (no NUL character)")
            # A byte that is not UTF-8 comes from the command line as a lone surrogate: no file
            # name, TOML file or terminal line can hold it.
            need(not any(0xD800 <= ord(c) <= 0xDFFF for c in value), "valid UTF-8 text")
            need(all(len(part.encode()) <= 255 for part in value.split("/")) and len(value.encode()) < 4096,
                 "a path whose names are at most 255 bytes each (4095 in all)")
        case "env.id":
            from a2c_tui.learn.envs import check_env_id  # late import: envs pulls in ale_py

            problem = check_env_id(value)
            if problem:
                raise not_allowed("env.id", value, problem)
        case "env.num_envs":
            need(1 <= value <= 1024, "an integer from 1 to 1024")
        case "env.noop_max":
            need(0 <= value <= 1000, "an integer from 0 to 1000")
        case "env.max_episode_frames":
            need(1 <= value <= 2**31 - 1, "an integer from 1 to 2**31 - 1")  # ALE's frame counter is 32-bit
        case "algo.n_steps":
            need(1 <= value <= 10_000, "an integer from 1 to 10000")
        case "algo.gamma":
            need(0 < value <= 1, "in (0, 1]")
        case "algo.gae_lambda":
            need(0 <= value <= 1, "in [0, 1]")
        case "algo.lr":
            need(0 < value <= 1, "in (0, 1]")
        case "algo.lr_schedule":
            need(value in ("linear", "constant"), 'one of "linear", "constant"')
        case "algo.value_coef" | "algo.entropy_coef":
            need(0 <= value <= 100, "in [0, 100]")
        case "algo.max_grad_norm":
            need(0 < value <= 1e6, "in (0, 1e6]")
        case "algo.optimizer":
            need(value in ("rmsprop_tf", "rmsprop", "adam"), 'one of "rmsprop_tf", "rmsprop", "adam"')
        case "algo.rms_alpha":
            need(0 <= value < 1, "in [0, 1)")
        case "algo.rms_eps":
            # The optimizers compute in float32, where a smaller eps is 0 or subnormal: Adam's 0/0 gives NaN weights.
            need(FLOAT32_TINY <= value <= 1, f"in [{FLOAT32_TINY:.3g}, 1] (smaller underflows in float32)")


def _coerce(key: str, typ: type, value: Any) -> Any:
    """Check the type of one value (ints are accepted for floats); raise ConfigError."""
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # hundreds of digits
            raise ConfigError(f"{key} = <a number of {len(str(value))} digits> is not allowed: must be a finite "
                              f"number") from None
    if type(value) is not typ:
        raise not_allowed(key, value, f"must be {names[typ]}")
    return value


def check_value(key: str, value: Any) -> Any:
    """Validate one dotted key's value; return it coerced to the field's type."""
    section, _, name = key.partition(".")
    cls = SECTIONS.get(section)
    known = {f.name: f for f in fields(cls)} if cls else {}
    if name not in known:
        allowed = ", ".join(f"{s}.{f.name}" for s, c in SECTIONS.items() for f in fields(c))
        raise ConfigError(f"unknown key {key!r}: allowed keys are {allowed}")
    typ = {"int": int, "float": float, "str": str, "bool": bool}[str(known[name].type)]
    value = _coerce(key, typ, value)
    _check_range(key, value)
    return value


def from_dict(data: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
    """Build a validated Config from nested dicts plus dotted-key overrides."""
    if not isinstance(data, dict):
        raise ConfigError("config must be a table with sections [run], [env], [algo]")
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}]: allowed sections are [run], [env], [algo]")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of keys")
        for name, value in values.items():
            flat[f"{section}.{name}"] = value
    flat.update(overrides or {})
    parts: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, value in flat.items():
        value = check_value(key, value)  # unknown keys and sections fail here
        section, _, name = key.partition(".")
        parts[section][name] = value
    return Config(**{s: SECTIONS[s](**parts[s]) for s in SECTIONS})


def parse_override(text: str) -> tuple[str, Any]:
    """`algo.lr=3e-4` -> ("algo.lr", 0.0003). Values are TOML literals; bare words are strings."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"--set {echo(text)} is not allowed: must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except ValueError:  # TOMLDecodeError, or an integer of more than 4300 digits
        value = raw  # a bare word such as SpaceInvaders or cpu
    return key, value


def check_resume_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Overrides for a resumed run, validated: RESUME_KEYS only."""
    for key in values:
        if key not in RESUME_KEYS:
            raise ConfigError(f"--set {key} cannot change on --resume (the run keeps its saved config); "
                              f"allowed: {', '.join(RESUME_KEYS)}")
    return {key: check_value(key, value) for key, value in values.items()}


def resume_overrides(overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`--set` strings for a resumed run -> validated overrides."""
    return check_resume_overrides(dict(parse_override(o) for o in overrides))


def load(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a TOML preset (None = built-in defaults) and apply `--set` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(files.read_bounded(path, files.CONFIG_LIMIT, "config file").decode())
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} does not exist") from None
        except files.RefusedFile as e:
            raise ConfigError(str(e)) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {e}") from None
        except ValueError as e:  # TOMLDecodeError, or an integer of more than 4300 digits
            raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None
    return from_dict(data, dict(parse_override(o) for o in overrides))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    return repr(value)


def _toml_char(c: str) -> str:
    """One character inside a TOML basic string. Every control character is escaped: a raw
    newline would end the string and start a line of someone else's choosing."""
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\u{ord(c):04x}"
    return "\\" + c if c in '"\\' else c


def to_toml(config: Config) -> str:
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{name} = {_toml_value(value)}" for name, value in values.items()]
        lines.append("")
    return "\n".join(lines)
