"""The GPU path's switches, run on the CPU: env groups that overlap stepping with acting
(env.overlap), the pinned staging of observations, TF32 and torch.compile (run.compile),
each against the plain loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2c_tui.learn.a2c import NonFiniteError, WeightCheck, forward_losses, make_optimizer, update
from a2c_tui.config import ConfigError, resume_overrides
from a2c_tui.learn.envs import EnvGroups
from a2c_tui.learn.model import ActorCritic, act, policy_step
from a2c_tui.run.trainer import Trainer, compile_parts, compiled, env_groups, set_tf32, use_tf32
from conftest import load_config

CUDA = torch.device("cuda")  # a device object only: nothing runs on it here
CPU = torch.device("cpu")


def rollouts(trainer: Trainer, updates: int) -> list[dict[str, torch.Tensor]]:
    """What each update trained on."""
    seen = []
    try:
        for _ in range(updates):
            trainer.train_update()
            r = trainer.rollout
            seen.append({"obs": r.obs.clone(), "actions": r.actions.clone(), "rewards": r.rewards.clone(),
                         "dones": r.dones.clone(), "values": r.values.clone(),
                         "last_values": trainer.last_values.clone()})
    finally:
        trainer.metrics.close()
        trainer.envs.close()
    return seen


def test_overlapped_env_groups_and_staged_obs_fill_the_same_rollout(tmp_path):
    """Two env groups (env.overlap = "on") with the observations going through a staging
    buffer (the GPU's pinned copy) train on what one vector env gives: each env its own seed
    and its own transitions in order, in the same rollout layout. Same weights after the
    updates here (the random stream is drawn per group, in the same order)."""
    # 4 envs, not the preset's 8: each SpaceInvaders env takes ~0.3 s to start
    plain = Trainer(load_config("smoke", tmp_path / "a", "env.overlap=off", "env.num_envs=4"), tensorboard=False)
    assert not isinstance(plain.envs, EnvGroups)
    expected = rollouts(plain, 2)  # before the next trainer seeds torch's random stream again
    grouped = Trainer(load_config("smoke", tmp_path / "b", "env.overlap=on", "env.num_envs=4"), tensorboard=False)
    assert isinstance(grouped.envs, EnvGroups)
    assert [s.stop - s.start for s in grouped.envs.slices] == [2, 2]
    assert [g._seed for g in grouped.envs.groups] == [1, 3]  # env i keeps seed + i
    grouped._staging = torch.zeros((4, *grouped.envs.observation_shape), dtype=torch.uint8)
    got = rollouts(grouped, 2)
    assert grouped._staging.any()  # the observations went through it
    for a, b in zip(expected, got):
        for key in ("obs", "actions", "rewards", "dones"):
            assert torch.equal(a[key], b[key]), key
        for key in ("values", "last_values"):
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(plain.model.state_dict().items(), grouped.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_overlap_steps_one_group_while_the_network_acts_for_the_other(tmp_path):
    trainer = Trainer(load_config("smoke", tmp_path, "env.overlap=on", "env.num_envs=4"), tensorboard=False)
    calls: list[str] = []

    def logged(fn, what):
        def call(*args):
            calls.append(what(*args))
            return fn(*args)
        return call

    for name, group in zip("AB", trainer.envs.groups):
        group.send = logged(group.send, lambda actions, name=name: f"send {name}")
        group.recv = logged(group.recv, lambda name=name: f"recv {name}")
    trainer._act = logged(trainer._act, lambda t, part: f"act {'AB'[part.start > 0]}")
    try:
        trainer.train_update()
    finally:
        trainer.metrics.close()
        trainer.envs.close()
    steps = trainer.config.algo.n_steps
    # A's emulators step while the network acts for B, and B's while it acts for A
    cycle = ["recv A", "act A", "send A", "recv B", "act B", "send B"]
    assert calls == ["act A", "send A", "act B", "send B"] + cycle * (steps - 1) + ["recv A", "recv B"]


def test_auto_settings_change_nothing_on_the_cpu():
    config = load_config("smoke", "/nonexistent")
    assert (config.env.overlap, config.run.tf32, config.run.compile) == ("auto", "auto", "auto")
    assert env_groups(config, CPU, cores=64) == 1
    assert env_groups(config, CUDA, cores=16) == 2
    assert env_groups(config, CUDA, cores=2) == 1  # the emulators would have no core of their own
    assert env_groups(config.replace(**{"env.overlap": "off"}), CUDA, cores=16) == 1
    assert env_groups(config.replace(**{"env.overlap": "on"}), CPU, cores=2) == 2
    assert not use_tf32(config, CPU) and use_tf32(config, CUDA)
    assert not use_tf32(config.replace(**{"run.tf32": "off"}), CUDA)
    assert not use_tf32(config.replace(**{"run.tf32": "on"}), CPU)  # the CPU has no TF32: numerics untouched
    assert compile_parts(config, CPU) == compile_parts(config, CUDA) == "off"
    assert compile_parts(config.replace(**{"run.compile": "act"}), CPU) == "act"


def test_overlap_needs_an_atari_game_and_two_envs():
    cartpole = load_config("cartpole", "/nonexistent")
    assert env_groups(cartpole, CUDA, cores=16) == 1
    with pytest.raises(ConfigError, match="env.overlap = 'on' is not allowed"):
        env_groups(cartpole.replace(**{"env.overlap": "on"}), CPU, cores=2)
    with pytest.raises(ConfigError, match="env.overlap = 'on' is not allowed"):
        env_groups(load_config("smoke", "/nonexistent", "env.num_envs=1", "env.overlap=on"), CPU, cores=2)
    with pytest.raises(ConfigError, match='one of "auto", "on", "off"'):
        load_config("smoke", "/nonexistent", "env.overlap=yes")
    with pytest.raises(ConfigError, match='one of "auto", "off", "act", "all"'):
        load_config("smoke", "/nonexistent", "run.compile=on")


def test_tf32_switches_both_matmuls_and_convolutions():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(False)  # cuDNN's default is on: "off" must turn it off too
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_a_cpu_run_leaves_the_tf32_flags_alone(tmp_path):
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    trainer = Trainer(load_config("cartpole", tmp_path, "run.tf32=on", "run.compile=off"), tensorboard=False)
    trainer.discard()
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert trainer._staging is None  # pinned memory is for a GPU


@pytest.mark.slow  # inductor compiles C++ here: ~30-60 s on 2 cores
def test_compiled_act_and_update_match_the_eager_ones(monkeypatch):
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)  # eager's random stream, to compare actions
    torch.manual_seed(0)
    model = ActorCritic((4,), 2)
    twin = ActorCritic((4,), 2)
    twin.load_state_dict(model.state_dict())
    obs = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(5)
    eager = act(model, obs)
    torch.manual_seed(5)
    fast = act(twin, obs, step=compiled(policy_step, CPU))
    assert np.array_equal(eager.actions, fast.actions)
    for a, b in [(eager.values, fast.values), (eager.log_probs, fast.log_probs), (eager.entropy, fast.entropy)]:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    targets = torch.randn(16, generator=torch.Generator().manual_seed(2))
    actions = torch.as_tensor(eager.actions)
    losses_fn = compiled(forward_losses, CPU)
    opt_a = make_optimizer("rmsprop_tf", model.parameters(), 7e-4, 0.99, 1e-5)
    opt_b = make_optimizer("rmsprop_tf", twin.parameters(), 7e-4, 0.99, 1e-5)
    for _ in range(3):
        a = update(model, opt_a, obs, actions, targets, 7e-4, 0.5, 0.01, 0.5)
        b = update(twin, opt_b, obs, actions, targets, 7e-4, 0.5, 0.01, 0.5, losses_fn=losses_fn)
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    for (name, p), q in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)


def test_the_gpu_switches_may_change_on_resume():
    """They say how a run uses the machine, not what it learns: a run moved to a GPU box takes them."""
    assert resume_overrides(["env.overlap=on", "run.tf32=off", "run.compile=act"]) == {
        "env.overlap": "on", "run.tf32": "off", "run.compile": "act"}



def test_a_weight_check_read_later_says_what_the_step_did():
    """WeightCheck (the trainer's on CUDA; forced here): update() queues the weights' norm,
    settle() reads it once and raises if the step made them non-finite."""
    torch.manual_seed(0)
    model = ActorCritic((4, 84, 84), 6)
    obs = torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    actions, targets = torch.arange(8) % 6, torch.linspace(-1, 1, 8)
    check = WeightCheck(CPU)
    optimizer = make_optimizer("rmsprop_tf", model.parameters(), 7e-4, 0.99, 1e-5)
    update(model, optimizer, obs, actions, targets, 7e-4, 0.5, 0.01, 0.5, weight_check=check)
    assert check.pending
    check.settle()  # finite weights: nothing to say
    assert not check.pending

    # Adam with eps 0: 0/0 where a gradient is 0 (the first convolution's, on black frames)
    optimizer = make_optimizer("adam", model.parameters(), 7e-4, 0.99, 0.0)
    update(model, optimizer, torch.zeros_like(obs), actions, targets, 7e-4, 0.5, 0.01, 0.5, weight_check=check)
    assert check.pending  # the loss and gradient were finite: the step was taken
    assert not all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(NonFiniteError, match="non-finite norm"):
        check.settle()
    assert not check.pending  # said once
    check.settle()
