"""The update's replay: acting keeps the convolutions' outputs, and the update's autograd graph
is built on them instead of running the convolutions again on the batch. It must compute the
same update, bit for bit on the CPU."""

from __future__ import annotations

import pytest
import torch

from a2c_tui.learn.a2c import a2c_loss
from a2c_tui.learn.model import ActorCritic, act
from a2c_tui.learn.rollout import Rollout
from a2c_tui.run import trainer as trainer_module

from conftest import load_config

CPU = torch.device("cpu")


def grads(model: ActorCritic, logits: torch.Tensor, values: torch.Tensor, actions, targets) -> list[torch.Tensor]:
    loss = a2c_loss(logits, values, actions, targets, 0.25, 0.01).total
    return list(torch.autograd.grad(loss, list(model.parameters())))


@pytest.mark.parametrize("bf16", [False, True])
def test_replay_gives_the_gradients_of_a_forward_on_the_batch(bf16):
    torch.manual_seed(0)
    model = ActorCritic((4, 84, 84), 6, bf16=bf16)
    steps, envs = 3, 5
    dtype = torch.bfloat16 if bf16 else torch.float32
    rollout = Rollout(steps, envs, (4, 84, 84), torch.uint8, CPU, model.kept_shapes, dtype)
    rollout.obs.copy_(torch.randint(0, 256, rollout.obs.shape, dtype=torch.uint8))
    acted = [act(model, rollout.obs[t], keep=[k[t] for k in rollout.kept]) for t in range(steps)]
    batch = steps * envs
    obs = rollout.obs.reshape(batch, 4, 84, 84)
    kept = [k.reshape(batch, *k.shape[2:]) for k in rollout.kept]
    actions, targets = torch.randint(0, 6, (batch,)), torch.randn(batch)

    logits, values = model.replay(obs, kept)
    # the replayed outputs are those of a forward on the whole batch, bit for bit, and the acting
    # forward's (its 512-unit layer ran on smaller batches: the same up to float32 rounding)
    assert torch.allclose(values, torch.cat([a.values for a in acted]).to(values.dtype), rtol=1e-5, atol=1e-6)
    forward_logits, forward_values = model(obs)
    assert torch.equal(logits, forward_logits) and torch.equal(values, forward_values)
    replayed = grads(model, logits, values, actions, targets)
    reference = grads(model, forward_logits, forward_values, actions, targets)
    for (name, _), a, b in zip(model.named_parameters(), replayed, reference):
        assert a.dtype == torch.float32 and torch.equal(a, b), name
    assert all(g.abs().sum() > 0 for g in replayed)  # every layer is reached (conv1's weight included)


def small_setup(seed: int) -> tuple[ActorCritic, torch.Tensor, list[torch.Tensor]]:
    """A model, 4 random frames and empty slots for its kept outputs."""
    torch.manual_seed(seed)
    model = ActorCritic((4, 84, 84), 6)
    obs = torch.randint(0, 256, (4, 4, 84, 84), dtype=torch.uint8)
    kept = [torch.zeros(4, *shape).contiguous(memory_format=torch.channels_last) for shape in model.kept_shapes]
    return model, obs, kept


def test_replay_on_stale_activations_is_not_the_forward():
    """The check above can fail: activations kept before a weight change give other gradients."""
    model, obs, kept = small_setup(seed=1)
    with torch.no_grad():
        model(obs, kept)
        model.torso[0][2].weight.mul_(1.5)
    assert not torch.equal(model.replay(obs, kept)[1], model(obs)[1])


def trained(tmp_path, replay: bool, monkeypatch, *overrides: str) -> tuple[dict, list, bool]:
    with monkeypatch.context() as patch:
        if not replay:
            patch.setattr(trainer_module, "replays", lambda model, parts: False)
        config = load_config("smoke", tmp_path / ("replay" if replay else "forward"), "run.eval_every=0",
                             *overrides)
        trainer = trainer_module.Trainer(config, tensorboard=False)
    try:
        stats = [trainer.train_update() for _ in range(6)]
        return dict(trainer.model.state_dict()), stats, trainer._replay
    finally:
        trainer.metrics.close()
        trainer.envs.close()


@pytest.mark.parametrize("overrides", [(), ("env.overlap=on",), ("run.precision=bf16",)])
def test_training_with_replay_is_training_without_it(tmp_path, monkeypatch, overrides):
    """Same seed, six updates on SpaceInvaders: the same weights and stats to the bit, with the
    envs in two groups (each acting fills its own columns) and under bf16 autocast too."""
    weights, stats, replayed = trained(tmp_path, True, monkeypatch, *overrides)
    reference, reference_stats, forward_replayed = trained(tmp_path, False, monkeypatch, *overrides)
    assert replayed and not forward_replayed
    assert stats == reference_stats
    assert all(torch.equal(weights[name], reference[name]) for name in reference)


def test_replay_is_used_for_images_without_compile():
    assert trainer_module.replays(ActorCritic((4, 84, 84), 6), "off")
    assert not trainer_module.replays(ActorCritic((4, 84, 84), 6), "all")
    assert not trainer_module.replays(ActorCritic((4, 84, 84), 6), "act")
    assert not trainer_module.replays(ActorCritic((4,), 2), "off")


def test_a_kept_output_overwritten_before_the_backward_is_an_error():
    """Acting for the next rollout before the update's backward would overwrite what the graph
    was built on: autograd says so instead of computing other gradients."""
    model, obs, kept = small_setup(seed=2)
    with torch.inference_mode():
        model(obs, kept)
    logits, values = model.replay(obs, kept)
    with torch.inference_mode():
        model(obs.flip(0), kept)  # the next acting step writes the same slots
    with pytest.raises(RuntimeError, match="modified"):
        values.sum().backward()
