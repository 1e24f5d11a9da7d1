"""run.precision: bfloat16 autocast for the torso only; weights, heads, targets and the
optimizer stay float32, and the float32 path is the reference one."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from a2c_tui.learn import model as model_mod
from a2c_tui.learn.a2c import RMSpropTF, a2c_loss, update
from a2c_tui.config import ConfigError, check_resume_overrides
from a2c_tui.learn.model import ActorCritic, resolve_precision


def batch(n: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=g)
    return obs, torch.randint(0, 6, (n,), generator=g), torch.randn(n, generator=g)


def flat_grad(m: ActorCritic, obs, actions, targets) -> torch.Tensor:
    m.zero_grad(set_to_none=True)
    logits, values = m(obs)
    a2c_loss(logits, values, actions, targets, 0.25, 0.01).total.backward()
    return torch.cat([p.grad.flatten() for p in m.parameters()])


def test_auto_is_bf16_only_where_bf16_is_fast(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(model_mod, "fast_bf16", lambda device: True)
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("auto", cpu, images=False) == "fp32"  # a vector env's MLP
    assert resolve_precision("bf16", cpu, images=False) == "bf16"  # asked for: given
    monkeypatch.setattr(model_mod, "fast_bf16", lambda device: False)
    assert resolve_precision("auto", cpu) == "fp32"


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="Linux: the CPU's flags are in /proc/cpuinfo")
def test_fast_bf16_on_the_cpu_follows_the_cpus_flags():
    with open("/proc/cpuinfo") as f:
        flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    assert model_mod.fast_bf16(torch.device("cpu")) == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_bf16_torso_keeps_float32_outputs_weights_and_gradients():
    torch.manual_seed(0)
    m = ActorCritic((4, 84, 84), 6, bf16=True)
    obs, actions, targets = batch()
    logits, values = m(obs)
    assert logits.dtype == torch.float32 and values.dtype == torch.float32
    flat_grad(m, obs, actions, targets)
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in m.parameters())
    # the bf16 flag is not state: a bf16 run's checkpoint loads into a float32 model
    assert set(m.state_dict()) == set(ActorCritic((4, 84, 84), 6).state_dict())


def test_bf16_changes_the_torso_and_nothing_else():
    torch.manual_seed(0)
    m32 = ActorCritic((4, 84, 84), 6)
    m16 = copy.deepcopy(m32)
    m16.bf16 = True
    obs, actions, targets = batch()
    # the heads are float32: given the same features they give bit-identical outputs
    features = torch.randn(8, 512)
    assert torch.equal(m16.policy_head(features), m32.policy_head(features))
    with torch.no_grad():
        l32, v32 = m32(obs)
        l16, v16 = m16(obs)
    assert not torch.equal(l16, l32)  # the flag does something...
    assert torch.allclose(v16, v32, rtol=0.05, atol=0.05) and torch.allclose(l16, l32, atol=0.01)  # ...small
    g32, g16 = flat_grad(m32, obs, actions, targets), flat_grad(m16, obs, actions, targets)
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99
    assert 0.95 < float(g16.norm() / g32.norm()) < 1.05


def test_the_float32_path_is_unchanged_by_the_flag_being_off():
    torch.manual_seed(0)
    m = ActorCritic((4, 84, 84), 6)
    reference = copy.deepcopy(m)
    obs, actions, targets = batch()
    # the reference: the forward as it was before precision existed (float input, no autocast)
    x = obs.contiguous(memory_format=torch.channels_last).float()
    features = reference.torso(x)
    expect_logits, expect_values = reference.policy_head(features), reference.value_head(features).squeeze(-1)
    logits, values = m(obs)
    assert torch.equal(logits, expect_logits) and torch.equal(values, expect_values)


def test_linear_weights_are_laid_out_transposed_and_compute_what_contiguous_ones_do():
    torch.manual_seed(0)
    m = ActorCritic((4, 84, 84), 6)
    fc = m.torso[1].weight
    assert fc.shape == (512, 3136) and fc.t().is_contiguous()  # (in, out) in memory: fast for a batch of 16
    contiguous = copy.deepcopy(m)
    for layer in contiguous.modules():
        if isinstance(layer, torch.nn.Linear):
            layer.weight = torch.nn.Parameter(layer.weight.detach().contiguous())
    assert contiguous.torso[1].weight.is_contiguous()
    ours, theirs = m.state_dict(), contiguous.state_dict()  # same names, shapes, values: checkpoints fit both
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    obs, actions, targets = batch()
    with torch.no_grad():
        (logits, values), (ref_logits, ref_values) = m(obs[:16]), contiguous(obs[:16])
    assert torch.allclose(logits, ref_logits, rtol=1e-5, atol=1e-7) and torch.allclose(values, ref_values, rtol=1e-5, atol=1e-7)
    g, ref_g = flat_grad(m, obs, actions, targets), flat_grad(contiguous, obs, actions, targets)
    # float32 rounding only: the same sums, taken in another order
    assert float((g - ref_g).abs().max()) < 1e-6 * float(ref_g.abs().max())
    assert fc.grad.stride() == fc.stride()  # gradients (and so the optimizer's state) follow the layout


def test_a_bf16_update_keeps_the_optimizer_in_float32():
    torch.manual_seed(0)
    m = ActorCritic((4, 84, 84), 6, bf16=True)
    opt = RMSpropTF(m.parameters(), lr=7e-4)
    obs, actions, targets = batch()
    stats = update(m, opt, obs, actions, targets, 7e-4, 0.25, 0.01, 0.5)
    assert all(torch.isfinite(torch.tensor(v)) for k, v in stats.items() if k != "r2")
    assert all(s["square_avg"].dtype == torch.float32 for s in opt.state.values())


def test_precision_may_change_on_resume_but_must_be_known():
    assert check_resume_overrides({"run.precision": "bf16"}) == {"run.precision": "bf16"}
    with pytest.raises(ConfigError, match="run.precision"):
        check_resume_overrides({"run.precision": "half"})


def test_from_weights_is_the_loaded_network_and_leaves_the_random_stream_alone():
    torch.manual_seed(0)
    trained = ActorCritic((4, 84, 84), 6)
    state = torch.get_rng_state()
    m = ActorCritic.from_weights((4, 84, 84), 6, trained.state_dict())
    # no draws from the global generator: an evaluation beside training leaves the trainer's stream
    assert torch.equal(torch.get_rng_state(), state)
    # the same layout (channels-last convolutions, transposed Linear weights) and values
    for (name, p), (_, q) in zip(trained.named_parameters(), m.named_parameters(), strict=True):
        assert p.stride() == q.stride() and torch.equal(p, q), name
    obs = batch(4)[0]
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(trained(obs), m(obs)))
    # init=False is not the orthogonal init (64x4 weights: orthogonal columns, Wᵀ W = gain² I)
    orthogonal, kept = ActorCritic((4,), 2).torso[0].weight, ActorCritic((4,), 2, init=False).torso[0].weight
    assert torch.allclose(orthogonal.T @ orthogonal, 2 * torch.eye(4), atol=1e-5)
    assert not torch.allclose(kept.T @ kept, 2 * torch.eye(4), atol=1e-2)
    incomplete = {k: v for k, v in trained.state_dict().items() if k != "value_head.bias"}
    with pytest.raises(RuntimeError, match="value_head.bias"):  # strict: no uninitialised layer survives
        ActorCritic.from_weights((4, 84, 84), 6, incomplete)


@pytest.mark.parametrize("preset, fast, expected", [("smoke", True, "bf16"), ("smoke", False, "fp32"),
                                                    ("cartpole", True, "fp32")])
def test_the_default_auto_gives_bf16_to_the_image_network_where_bf16_is_native(tmp_path, monkeypatch, preset, fast,
                                                                             expected):
    from a2c_tui.run.trainer import Trainer
    from conftest import load_config

    monkeypatch.setattr(model_mod, "fast_bf16", lambda device: fast)
    config = load_config(preset, tmp_path, "env.num_envs=2", "run.torch_threads=1")
    assert config.run.precision == "auto"  # no preset but the GPU one names it
    trainer = Trainer(config, tensorboard=False)
    try:
        assert trainer.precision == expected and trainer.model.bf16 == (expected == "bf16")
        assert trainer.snapshot().device == f"cpu ({expected})"
    finally:
        trainer.metrics.close()
        trainer.envs.close()
