"""TF-form RMSprop against its formula, and the learning-rate schedule."""

from __future__ import annotations

import math

import pytest
import torch

from a2c_tui.learn.a2c import RMSpropTF, make_optimizer, scheduled_lr


def quadratic_steps(optimizer_factory, start: list[float], steps: int) -> list[list[float]]:
    """Minimise 0.5 * |theta|^2 (gradient = theta); the parameter after each step."""
    theta = torch.tensor(start, requires_grad=True)
    optimizer = optimizer_factory([theta])
    trajectory = []
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (theta ** 2).sum()).backward()
        optimizer.step()
        trajectory.append(theta.detach().tolist())
    return trajectory


def test_rmsprop_tf_first_step_by_hand():
    # lr 0.1, alpha 0.9, eps 0.01 (large so that "inside the root" shows), theta = (1, -2), g = theta
    # ms = 0.9 * 1 + 0.1 * g^2 = (1.0, 1.3)       -- the square average starts at ONES
    # theta = theta - 0.1 * g / sqrt(ms + 0.01)   -- eps INSIDE the square root
    #       = (1 - 0.1 / sqrt(1.01), -2 + 0.2 / sqrt(1.31)) = (0.9004963, -1.8252598)
    (first,) = quadratic_steps(lambda p: make_optimizer("rmsprop_tf", p, lr=0.1, alpha=0.9, eps=0.01), [1.0, -2.0], 1)
    assert first == pytest.approx([0.9004963, -1.8252598], abs=1e-6)
    # PyTorch's form (ms from zeros, eps outside) would step to 1 - 0.1 / (sqrt(0.1) + 0.01) = 0.6934
    assert abs(first[0] - 0.6934) > 0.1


def test_rmsprop_tf_three_steps_follow_the_formula():
    lr, alpha, eps = 0.05, 0.99, 1e-5
    start = [0.5, -3.0, 2.0]
    got = quadratic_steps(lambda p: RMSpropTF(p, lr=lr, alpha=alpha, eps=eps), start, 3)

    expected = []
    theta = list(start)
    ms = [1.0] * len(theta)
    for _ in range(3):
        for i, g in enumerate(theta):  # g = theta for 0.5 * theta^2
            ms[i] = alpha * ms[i] + (1 - alpha) * g * g
            theta[i] = theta[i] - lr * g / math.sqrt(ms[i] + eps)
        expected.append(list(theta))
    for step_got, step_expected in zip(got, expected):
        assert step_got == pytest.approx(step_expected, abs=1e-6)


def test_rmsprop_tf_keeps_its_square_average_in_the_state_dict():
    theta = torch.tensor([2.0], requires_grad=True)
    optimizer = RMSpropTF([theta], lr=0.1, alpha=0.9, eps=1e-5)
    (0.5 * theta ** 2).sum().backward()
    optimizer.step()
    state = optimizer.state_dict()["state"][0]
    assert state["square_avg"].tolist() == pytest.approx([0.9 + 0.1 * 4.0])  # 1.3


def test_other_optimizers_are_the_torch_ones():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("rmsprop", params, 1e-3, 0.99, 1e-5), torch.optim.RMSprop)
    assert isinstance(make_optimizer("adam", params, 1e-3, 0.99, 1e-5), torch.optim.Adam)
    with pytest.raises(ValueError):
        make_optimizer("sgd", params, 1e-3, 0.99, 1e-5)


def test_linear_lr_reaches_zero_at_total_steps_and_never_goes_negative():
    base, total = 7e-4, 10_000
    assert scheduled_lr(base, "linear", 0, total) == pytest.approx(base)
    assert scheduled_lr(base, "linear", 2_500, total) == pytest.approx(0.75 * base)
    assert scheduled_lr(base, "linear", 5_000, total) == pytest.approx(0.5 * base)
    assert scheduled_lr(base, "linear", total, total) == 0.0
    for past in (total + 1, total + 80, 3 * total):
        assert scheduled_lr(base, "linear", past, total) == 0.0
    values = [scheduled_lr(base, "linear", s, total) for s in range(0, 2 * total, 80)]
    assert all(v >= 0 for v in values)
    assert all(a >= b for a, b in zip(values, values[1:]))  # never rises


def test_constant_lr_stays():
    assert scheduled_lr(7e-4, "constant", 0, 100) == 7e-4
    assert scheduled_lr(7e-4, "constant", 1_000, 100) == 7e-4
