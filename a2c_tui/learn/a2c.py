"""The A2C loss, the optimizers and one update. Returns one stats record per update."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop as TensorFlow (and OpenAI baselines) do it, as used by the A2C references:

        ms    = alpha * ms + (1 - alpha) * g^2        (ms starts at ones, not zeros)
        theta = theta - lr * g / sqrt(ms + eps)        (eps inside the square root)

    PyTorch's RMSprop starts ms at zero and adds eps outside the root, which gives huge
    first steps; stable-baselines3 ships this form as RMSpropTFLike for A2C.
    """

    def __init__(self, params, lr: float = 7e-4, alpha: float = 0.99, eps: float = 1e-5):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            squares = []
            for p in params:
                state = self.state[p]
                if "square_avg" not in state:
                    state["square_avg"] = torch.ones_like(p)
                squares.append(state["square_avg"])
            alpha, eps, lr = group["alpha"], group["eps"], group["lr"]
            torch._foreach_mul_(squares, alpha)
            torch._foreach_addcmul_(squares, grads, grads, value=1 - alpha)
            denominators = torch._foreach_add(squares, eps)
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(params, grads, denominators, value=-lr)


def make_optimizer(name: str, params, lr: float, alpha: float, eps: float) -> torch.optim.Optimizer:
    if name == "rmsprop_tf":
        return RMSpropTF(params, lr=lr, alpha=alpha, eps=eps)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=alpha, eps=eps)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, eps=eps)
    raise ValueError(f"unknown optimizer {name!r}")


def match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Lay out each per-parameter state tensor (RMSprop's running squares, Adam's moments) as
    its parameter is laid out. A checkpoint from before the Linear weights' transposed layout
    (model.py) holds contiguous ones, and the optimizer's foreach ops run ~3.5x slower over
    mismatched strides; a crafted one may hold a value broadcast over the shape (stride 0),
    which the in-place step refuses. The values are unchanged."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def scheduled_lr(base_lr: float, schedule: str, steps_done: int, total_steps: int) -> float:
    """Linear: base_lr at step 0, 0 at total_steps (never negative). Constant: base_lr."""
    if schedule == "constant":
        return base_lr
    return base_lr * max(0.0, 1.0 - steps_done / total_steps)


def r_squared(targets: torch.Tensor, predictions: torch.Tensor) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot of predictions for targets
    (nan when the targets do not vary)."""
    r2, ss_tot = _r_squared_on_device(targets, predictions).tolist()
    return r2 if ss_tot > 0 else math.nan


def _r_squared_on_device(targets: torch.Tensor, predictions: torch.Tensor) -> torch.Tensor:
    """(1 - SS_res / SS_tot, SS_tot) without a transfer: the caller reads them with its other numbers."""
    ss_res = torch.sum((targets - predictions) ** 2)
    ss_tot = torch.sum((targets - targets.mean()) ** 2)
    return torch.stack([1.0 - ss_res / ss_tot, ss_tot])


@dataclass
class Losses:
    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    advantages: torch.Tensor


def a2c_loss(logits: torch.Tensor, values: torch.Tensor, actions: torch.Tensor,
             value_targets: torch.Tensor, value_coef: float, entropy_coef: float) -> Losses:
    """loss = -mean(log pi(a|s) * A) + value_coef * mean((v - v^)^2) - entropy_coef * mean(H[pi(.|s)])

    A = v^ - v with v detached: the policy gradient does not train the critic. The entropy
    is that of the whole distribution, so a larger entropy_coef pushes it up.
    """
    log_pi = torch.log_softmax(logits, dim=-1)
    log_prob_taken = log_pi.gather(-1, actions[:, None]).squeeze(-1)
    entropy = -(log_pi.exp() * log_pi).sum(-1).mean()
    advantages = (value_targets - values).detach()
    policy_loss = -(log_prob_taken * advantages).mean()
    value_loss = ((values - value_targets) ** 2).mean()
    total = policy_loss + value_coef * value_loss - entropy_coef * entropy
    return Losses(total, policy_loss, value_loss, entropy, advantages)


def forward_losses(model: nn.Module, obs: torch.Tensor, actions: torch.Tensor, value_targets: torch.Tensor,
                   value_coef: float, entropy_coef: float) -> tuple[Losses, torch.Tensor]:
    """The network on the batch and its losses: (losses, values). What `run.compile = "all"` compiles."""
    logits, values = model(obs)
    return a2c_loss(logits, values, actions, value_targets, value_coef, entropy_coef), values


def replayed_losses(kept: list[torch.Tensor]) -> Callable[..., tuple[Losses, torch.Tensor]]:
    """forward_losses for a batch whose convolutions' outputs acting kept (`kept`, each flattened
    to the batch, in the batch's order; ActorCritic.replay): the same losses and gradients,
    without running the convolutions again."""
    def losses(model: nn.Module, obs: torch.Tensor, actions: torch.Tensor, value_targets: torch.Tensor,
               value_coef: float, entropy_coef: float) -> tuple[Losses, torch.Tensor]:
        logits, values = model.replay(obs, kept)
        return a2c_loss(logits, values, actions, value_targets, value_coef, entropy_coef), values
    return losses


class NonFiniteError(RuntimeError):
    """The loss or the gradient was NaN or infinite (the update was not applied), or the
    optimizer step made the weights so (checkpoints.save_refusal then keeps them off disk)."""


class WeightCheck:
    """Whether an optimizer step left the weights finite, read without waiting for the device.

    A finite gradient can still give non-finite weights (Adam with an eps that is 0 in float32:
    0/0). One fused norm per tensor finds them; it overflows only for weights beyond ~1e19,
    which overflow the network's outputs anyway. start() queues the norm and its copy to host
    memory (pinned, non-blocking on CUDA) behind the step; settle() reads it, and raises
    NonFiniteError if it is not finite. Settled after the device has caught up (the next
    actions' read), it costs no wait: an update then reads the device once."""

    def __init__(self, device: torch.device):
        cuda = device.type == "cuda"
        self._host = torch.zeros((), dtype=torch.float32, pin_memory=cuda)
        self._copied = torch.cuda.Event() if cuda else None
        self.pending = False

    def start(self, model: nn.Module) -> None:
        self.settle()  # the previous step's, if nothing read it yet
        with torch.no_grad():
            norm = torch.stack(torch._foreach_norm(list(model.parameters()))).sum()
            self._host.copy_(norm, non_blocking=True)
        if self._copied is not None:
            self._copied.record()
        self.pending = True

    def settle(self) -> None:
        if not self.pending:
            return
        self.pending = False
        if self._copied is not None:
            self._copied.synchronize()
        norm = float(self._host)
        if not math.isfinite(norm):
            raise NonFiniteError(f"the optimizer step gave weights with a non-finite norm ({norm}) from a finite "
                                 f"loss and gradient; they are never saved")


def update(model: nn.Module, optimizer: torch.optim.Optimizer, obs: torch.Tensor, actions: torch.Tensor,
           value_targets: torch.Tensor, lr: float, value_coef: float, entropy_coef: float,
           max_grad_norm: float,
           average_gradients: Callable[[list[nn.Parameter], torch.Tensor], None] | None = None,
           losses_fn: Callable[..., tuple[Losses, torch.Tensor]] = forward_losses,
           weight_check: WeightCheck | None = None) -> dict[str, float]:
    """One gradient step on a flattened batch. Raises NonFiniteError if the loss or the
    gradient norm is not finite (weights untouched) or the step left the weights non-finite.
    `average_gradients(parameters, loss)` (several ranks) makes the gradients the mean of every rank's.
    `losses_fn`: forward_losses, a compiled copy of it, or replayed_losses(...).

    On a GPU every number read on the host waits for the device. The update reads its numbers
    once, before the step (the finiteness check must come before it). The weights after the
    step are checked by a second read, or, with `weight_check`, later: weight_check.settle()
    then raises the NonFiniteError, at a point where the caller waits for the device anyway."""
    losses, values = losses_fn(model, obs, actions, value_targets, value_coef, entropy_coef)
    optimizer.zero_grad(set_to_none=True)
    losses.total.backward()
    if average_gradients is not None:
        # Before the clip: the clip and the reported norm are the averaged gradient's.
        average_gradients(list(model.parameters()), losses.total.detach())
    # The norm before clipping is what we report; clip_grad_norm_ returns it.
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    with torch.no_grad():
        values = values.detach()
        names = ("policy_loss", "value_loss", "entropy", "value_target_mean", "value_mean",
                 "advantage_mean", "advantage_std")
        total, grad_norm, *numbers, r2, ss_tot = torch.cat([torch.stack([
            losses.total.detach(), grad_norm, losses.policy, losses.value, losses.entropy,
            value_targets.mean(), values.mean(), losses.advantages.mean(), losses.advantages.std()]),
            _r_squared_on_device(value_targets, values)]).tolist()
    if not (math.isfinite(total) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        raise NonFiniteError(f"non-finite {'loss' if not math.isfinite(total) else 'gradient norm'} "
                             f"(loss={total}, grad_norm={grad_norm}); update skipped")
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.step()
    if weight_check is None:
        weight_check = WeightCheck(torch.device("cpu"))
        weight_check.start(model)
        weight_check.settle()
    else:
        weight_check.start(model)
    stats = dict(zip(names, numbers))
    stats.update(loss=total, grad_norm=grad_norm, r2=r2 if ss_tot > 0 else math.nan, lr=lr)
    return stats
