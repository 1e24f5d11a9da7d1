"""The A2C loss terms, R², the entropy's sign and the reported gradient norm."""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from a2c_tui.learn.a2c import WeightCheck, a2c_loss, r_squared, update
from a2c_tui.learn.model import ActorCritic


def test_r_squared_by_hand():
    # targets 1..4 (mean 2.5): SS_tot = 2.25 + .25 + .25 + 2.25 = 5; predictions off by 1 once: SS_res = 1
    assert r_squared(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 2, 3, 5])) == pytest.approx(1 - 1 / 5)
    # a perfect critic explains everything; predicting the mean explains nothing
    assert r_squared(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 2, 3, 4])) == pytest.approx(1.0)
    assert r_squared(torch.tensor([1.0, 2, 3, 4]), torch.full((4,), 2.5)) == pytest.approx(0.0)
    # worse than the mean is negative: SS_res = 4^2 + 3^2 + 2^2 + 1^2 = 30 -> 1 - 30/5 = -5
    assert r_squared(torch.tensor([1.0, 2, 3, 4]), torch.full((4,), 5.0)) == pytest.approx(-5.0)
    # argument order matters: the denominator is the variance of the *targets*
    # SS_tot of [1, 2, 3, 5] = (1-2.75)^2 + (2-2.75)^2 + (3-2.75)^2 + (5-2.75)^2 = 8.75
    assert r_squared(torch.tensor([1.0, 2, 3, 5]), torch.tensor([1.0, 2, 3, 4])) == pytest.approx(1 - 1 / 8.75)
    assert math.isnan(r_squared(torch.full((3,), 7.0), torch.tensor([1.0, 2, 3])))


def test_each_loss_term_by_hand():
    # Two samples, two actions. logits (0, ln 3) -> pi = (1/4, 3/4); logits (0, 0) -> (1/2, 1/2).
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], requires_grad=True)
    values = torch.tensor([1.0, -1.0], requires_grad=True)
    actions = torch.tensor([1, 0])
    targets = torch.tensor([3.0, -2.0])
    losses = a2c_loss(logits, values, actions, targets, value_coef=0.5, entropy_coef=0.1)

    # A = target - v = (2, -1)
    assert losses.advantages.tolist() == pytest.approx([2.0, -1.0])
    # policy: -mean(log pi(a|s) * A) = -(ln(3/4) * 2 + ln(1/2) * (-1)) / 2
    policy = -(math.log(0.75) * 2 + math.log(0.5) * -1) / 2
    assert float(losses.policy.detach()) == pytest.approx(policy, rel=1e-6)
    # value: mean((v - target)^2) = ((1 - 3)^2 + (-1 + 2)^2) / 2 = 2.5
    assert float(losses.value.detach()) == pytest.approx(2.5)
    # entropy: H(1/4, 3/4) = -(1/4 ln 1/4 + 3/4 ln 3/4), H(1/2, 1/2) = ln 2; mean of the two
    h1 = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    entropy = (h1 + math.log(2)) / 2
    assert float(losses.entropy.detach()) == pytest.approx(entropy, rel=1e-6)
    assert float(losses.total.detach()) == pytest.approx(policy + 0.5 * 2.5 - 0.1 * entropy, rel=1e-6)

    # The advantage is a constant for the policy term: the critic's gradient comes from the
    # value term only. d(0.5 * mean((v - t)^2))/dv = 0.5 * 2 * (v - t) / 2 = (v - t) / 2 = (-1, 0.5)
    losses.total.backward()
    assert values.grad.tolist() == pytest.approx([-1.0, 0.5])


def test_entropy_bonus_raises_entropy():
    """With a policy gradient that sharpens the policy, a large entropy_coef must end with a
    flatter policy than entropy_coef = 0 (subtracting mean log-prob instead would not)."""

    def train(entropy_coef: float) -> tuple[float, float]:
        torch.manual_seed(0)
        model = ActorCritic((4,), 3)
        with torch.no_grad():  # start from a peaked policy, well below the maximum entropy ln 3
            model.policy_head.bias.copy_(torch.tensor([2.0, 0.0, 0.0]))
        obs = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
        actions = torch.zeros(32, dtype=torch.long)  # always action 0 ...
        with torch.no_grad():
            _, values = model(obs)
        targets = values + 1.0  # ... with a positive advantage: sharpens pi toward action 0
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        entropies = []
        for _ in range(20):
            stats = update(model, optimizer, obs, actions, targets, lr=0.5, value_coef=0.0,
                           entropy_coef=entropy_coef, max_grad_norm=1e6)
            entropies.append(stats["entropy"])
        with torch.no_grad():
            log_pi = torch.log_softmax(model(obs)[0], -1)
            final = float(-(log_pi.exp() * log_pi).sum(-1).mean())
        return entropies[0], final

    start, without_bonus = train(0.0)
    start_bonus, with_bonus = train(5.0)
    assert start == pytest.approx(start_bonus)  # same start
    assert without_bonus < start - 0.05  # the advantage alone sharpens the policy
    assert with_bonus > without_bonus + 0.05  # the bonus keeps it flatter
    assert with_bonus > start + 0.05  # and here outweighs the sharpening: entropy rises
    assert with_bonus <= math.log(3) + 1e-6


def test_reported_grad_norm_is_before_clipping():
    torch.manual_seed(0)
    model = ActorCritic((4,), 2)
    obs = torch.randn(16, 4, generator=torch.Generator().manual_seed(2))
    actions = torch.randint(0, 2, (16,), generator=torch.Generator().manual_seed(3))
    targets = torch.randn(16, generator=torch.Generator().manual_seed(4)) * 10

    # the norm an independent backward pass gives
    logits, values = model(obs)
    a2c_loss(logits, values, actions, targets, 0.5, 0.01).total.backward()
    expected_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item()
    model.zero_grad(set_to_none=True)
    assert expected_norm > 1.0  # big enough for the clip at 0.1 to matter

    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    stats = update(model, optimizer, obs, actions, targets, lr=1.0, value_coef=0.5, entropy_coef=0.01,
                   max_grad_norm=0.1)
    assert stats["grad_norm"] == pytest.approx(expected_norm, rel=1e-4)
    # ... while the step taken used the clipped gradient: plain SGD at lr 1 moves by exactly 0.1
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))).item()
    assert moved == pytest.approx(0.1, rel=1e-3)


def test_update_stats_match_the_batch():
    torch.manual_seed(0)
    model = ActorCritic((4,), 2)
    obs = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    actions = torch.zeros(8, dtype=torch.long)
    targets = torch.arange(8, dtype=torch.float32)
    with torch.no_grad():
        _, values = model(obs)
    stats = update(model, torch.optim.SGD(model.parameters(), lr=1e-3), obs, actions, targets, lr=1e-3,
                   value_coef=0.5, entropy_coef=0.01, max_grad_norm=0.5)
    assert stats["value_target_mean"] == pytest.approx(3.5)  # mean of 0..7
    assert stats["value_mean"] == pytest.approx(float(values.mean()), abs=1e-6)
    assert stats["advantage_mean"] == pytest.approx(3.5 - float(values.mean()), abs=1e-5)
    assert stats["advantage_std"] == pytest.approx(float((targets - values).std()), abs=1e-5)
    assert stats["r2"] == pytest.approx(r_squared(targets, values), abs=1e-6)
    assert stats["lr"] == 1e-3


class HostReads(TorchFunctionMode):
    """Counts the calls that bring a tensor's value to the host: each one waits for a GPU."""

    READS = {"__float__", "__int__", "__bool__", "item", "tolist", "numpy", "cpu"}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def test_update_reads_the_device_twice_or_once_with_the_same_stats():
    """One read before the step (every stat and the finiteness check), one after (the weights'
    norm) unless a WeightCheck reads it later: on a GPU each read is a sync. The numbers are
    those of separate reads."""
    torch.manual_seed(0)
    model = ActorCritic((4,), 2)
    obs = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    actions = torch.randint(0, 2, (8,), generator=torch.Generator().manual_seed(6))
    targets = torch.randn(8, generator=torch.Generator().manual_seed(7))
    logits, values = model(obs)
    losses = a2c_loss(logits, values, actions, targets, 0.5, 0.01)
    losses.total.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
    def read(tensor: torch.Tensor) -> float:
        return float(tensor.detach())

    expected = {"loss": read(losses.total), "grad_norm": read(norm), "policy_loss": read(losses.policy),
                "value_loss": read(losses.value), "entropy": read(losses.entropy),
                "value_target_mean": read(targets.mean()), "value_mean": read(values.mean()),
                "advantage_mean": read(losses.advantages.mean()), "advantage_std": read(losses.advantages.std()),
                "r2": r_squared(targets, values.detach())}
    model.zero_grad(set_to_none=True)
    with HostReads() as counter:
        stats = update(model, torch.optim.SGD(model.parameters(), lr=1e-3), obs, actions, targets, lr=1e-3,
                       value_coef=0.5, entropy_coef=0.01, max_grad_norm=0.5)
    assert len(counter.reads) == 2, counter.reads
    assert {k: stats[k] for k in expected} == expected  # bit for bit

    # The trainer on CUDA: the weights' check is read later (WeightCheck), so once per update
    model.zero_grad(set_to_none=True)
    check = WeightCheck(torch.device("cpu"))
    with HostReads() as counter:
        update(model, torch.optim.SGD(model.parameters(), lr=1e-3), obs, actions, targets, lr=1e-3,
               value_coef=0.5, entropy_coef=0.01, max_grad_norm=0.5, weight_check=check)
    assert counter.reads == ["tolist"] and check.pending
