"""Actor-critic network (Nature-DQN CNN or MLP torso, policy and value heads) and act()."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn


def _orthogonal(layer: nn.Module, gain: float) -> nn.Module:
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


def _keep(layer: nn.Module, gain: float) -> nn.Module:
    return layer


class PixelConv(nn.Conv2d):
    """A Conv2d on raw 0..255 pixels that computes conv(x / 255): the 1/255 is applied to the
    8k weights instead of the millions of input values (same function, same gradients)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * (1.0 / 255.0), self.bias)


class _ReplayConvReLU(torch.autograd.Function):
    """relu(conv(x, weight, bias)) whose output was computed before (at acting time, with the
    same weights): the forward returns it as it is; the backward is autograd's own for a
    convolution and a ReLU (threshold_backward, convolution_backward) on the kept tensors."""

    @staticmethod
    def forward(ctx, x, weight, bias, out, stride):
        # saved, not just kept: a kept tensor overwritten before the backward (the next rollout
        # acting first) is then an error instead of wrong gradients
        ctx.save_for_backward(x, weight, out)
        ctx.stride = stride
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        x, weight, out = ctx.saved_tensors
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
        grad_x, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]], list(ctx.stride), [0, 0], [1, 1], False, [0, 0], 1,
            [ctx.needs_input_grad[0], True, True])
        return grad_x, grad_weight, grad_bias, None, None


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matmuls are native on `device`: CUDA GPUs from Ampere on, and CPUs
    with AVX-512 BF16 or AMX (elsewhere bf16 is emulated and slower than float32). The CPU's
    flags come from torch's own cpuinfo (private helpers: a torch without them says no)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def resolve_precision(name: str, device: torch.device, images: bool = True) -> str:
    """run.precision ("fp32" | "bf16" | "auto") -> "fp32" or "bf16" for this device. "auto" is
    bf16 for the image network where bf16 is native (fast_bf16), fp32 otherwise: the 64-64 MLP
    of a vector env is too small for bf16 to pay for its casts."""
    if name == "auto":
        return "bf16" if images and fast_bf16(device) else "fp32"
    return name


class ActorCritic(nn.Module):
    """Image observations (C, 84, 84) uint8 -> Nature-DQN CNN; vectors -> 64-64 tanh MLP.

    With `bf16` set, the torso (convolutions and the 512-unit layer: nearly all the work)
    runs under bfloat16 autocast; the weights, their gradients, the optimizer and the two
    heads stay float32, so logits, values and everything computed from them (value targets,
    losses) are float32."""

    def __init__(self, obs_shape: tuple[int, ...], n_actions: int, bf16: bool = False, init: bool = True):
        """`init`: the orthogonal init of the references; False keeps the layers' own cheap
        init, for weights that are loaded next (see `from_weights`)."""
        super().__init__()
        _init = _orthogonal if init else _keep
        self.bf16 = bf16
        self.obs_shape = tuple(obs_shape)
        self.n_actions = n_actions
        self.is_image = len(obs_shape) == 3
        root2 = math.sqrt(2)
        if self.is_image:
            channels, height, width = obs_shape
            convs = nn.Sequential(
                _init(PixelConv(channels, 32, 8, stride=4), root2), nn.ReLU(),
                _init(nn.Conv2d(32, 64, 4, stride=2), root2), nn.ReLU(),
                _init(nn.Conv2d(64, 64, 3, stride=1), root2), nn.ReLU(),
                nn.Flatten(),
            )
            with torch.no_grad():
                shapes, x = [], torch.zeros(1, *obs_shape)
                for layer in convs:
                    x = layer(x)
                    if isinstance(layer, nn.ReLU):
                        shapes.append(tuple(x.shape[1:]))
                flat = x.shape[1]
            # (C, H, W) of each convolution's output: what acting may keep for the update (replay)
            self.kept_shapes: tuple[tuple[int, ...], ...] = tuple(shapes)
            self.torso = nn.Sequential(convs, _init(nn.Linear(flat, 512), root2), nn.ReLU())
            hidden = 512
        else:
            (size,) = obs_shape
            self.torso = nn.Sequential(
                _init(nn.Linear(size, 64), root2), nn.Tanh(),
                _init(nn.Linear(64, 64), root2), nn.Tanh(),
            )
            hidden = 64
            self.kept_shapes = ()
        self.policy_head = _init(nn.Linear(hidden, n_actions), 0.01)
        self.value_head = _init(nn.Linear(hidden, 1), 1.0)
        if self.is_image:
            # NHWC convolutions: the training step is ~1.5x faster on CPU (BENCHMARKS.md).
            self.to(memory_format=torch.channels_last)
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                # Same (out, in) weight and state_dict, laid out as the transpose of a contiguous
                # (in, out) matrix: x @ W.T then reads W.T in order, which MKL's sgemm runs ~4x
                # faster for a batch of 16 (the acting forward; BENCHMARKS.md, "Where the time goes").
                layer.weight = nn.Parameter(layer.weight.detach().t().contiguous().t())

    def forward(self, obs: torch.Tensor, keep: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, *obs_shape), uint8 images or float vectors -> logits (B, A), values (B,).
        `keep` (images): one tensor per convolution, (B, *kept_shapes[i]), channels-last, that
        receives its output after the ReLU, for `replay` (acting: without autograd)."""
        x = self._input(obs)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if keep is None:
                features = self.torso(x)
            else:
                convs, linear, relu = self.torso
                slots = iter(keep)
                for layer in convs:
                    # each ReLU writes its output straight into its slot (ATen's relu is clamp_min(x, 0))
                    x = torch.clamp_min(x, 0, out=next(slots)) if isinstance(layer, nn.ReLU) else layer(x)
                features = relu(linear(x))
        return self._heads(features)

    def replay(self, obs: torch.Tensor, kept: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """forward(obs) for images whose convolutions' outputs were kept (forward's `keep`) with
        the weights as they are now: the convolutions are not run again, yet autograd sees the
        same graph and computes the same gradients (tests/test_replay.py: bit for bit). The
        update's forward on the whole batch is ~a fifth of its forward and backward."""
        x = self._input(obs)
        dtype = x.dtype
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            convs, linear, relu = self.torso
            layers = [layer for layer in convs if isinstance(layer, nn.Conv2d)]
            for conv, out in zip(layers, kept, strict=True):
                # the weight as the layer's forward uses it; under autocast, cast as autocast does
                weight = conv.weight * (1.0 / 255.0) if isinstance(conv, PixelConv) else conv.weight
                x = _ReplayConvReLU.apply(x, weight.to(dtype), conv.bias.to(dtype), out, conv.stride)
            features = relu(linear(x.flatten(1)))
        return self._heads(features)

    def _input(self, obs: torch.Tensor) -> torch.Tensor:
        if self.is_image:
            # 0..255 are exact in bfloat16; PixelConv scales. The frames stay (C, H, W) as the env
            # gives them: the first convolution (channels-last weights, so channels-last output)
            # runs as fast on them, and making them channels-last first costs a transposing copy.
            return obs.to(torch.bfloat16 if self.bf16 else torch.float32)
        return obs.float()

    def _heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = features.float()
        return self.policy_head(features), self.value_head(features).squeeze(-1)

    @classmethod
    def from_weights(cls, obs_shape: tuple[int, ...], n_actions: int, weights: dict[str, torch.Tensor],
                     bf16: bool = False) -> "ActorCritic":
        """The network holding `weights` (a state_dict: every name, strictly), on the CPU.

        Skips the orthogonal init, whose QR of the 3136×512 matrix costs 0.3–1.4 s on 2 cores
        (MKL's threaded QR fights a training loop for them) for values overwritten at once, and
        draws nothing from torch's global generator: an evaluation or a live game beside
        training leaves the trainer's random stream where it was."""
        with torch.random.fork_rng(devices=[]):  # the layers' own init draws
            model = cls(obs_shape, n_actions, bf16=bf16, init=False)
        model.load_state_dict(weights)
        return model


@dataclass
class Act:
    actions: np.ndarray  # int64 (B,), for the env
    action_tensor: torch.Tensor  # the same on the model's device, for the rollout (no copy back)
    logits: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor


def sample(logits: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Categorical sample by the Gumbel-max trick (one kernel, no Distribution object)."""
    if greedy:
        return logits.argmax(-1)
    uniform = torch.rand(logits.shape, device=logits.device, generator=generator).clamp_(min=1e-20)
    return (logits - torch.log(-torch.log(uniform))).argmax(-1)


@torch.inference_mode()
def choose_actions(model: ActorCritic, obs: torch.Tensor, greedy: bool = False,
                   generator: torch.Generator | None = None) -> np.ndarray:
    """Actions only (what playing needs): act() without the log-probs, values and entropy."""
    return sample(model(obs)[0], greedy, generator).cpu().numpy()


def policy_step(model: ActorCritic, obs: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None,
                keep: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, ...]:
    """(actions, logits, log-probs of the actions, values, entropies): what `run.compile` compiles.
    `keep`: see ActorCritic.forward."""
    logits, values = model(obs) if keep is None else model(obs, keep)
    actions = sample(logits, greedy, generator)
    log_pi = torch.log_softmax(logits, -1)
    return actions, logits, log_pi.gather(-1, actions[:, None]).squeeze(-1), values, -(log_pi.exp() * log_pi).sum(-1)


@torch.inference_mode()
def act(model: ActorCritic, obs: torch.Tensor, greedy: bool = False, generator: torch.Generator | None = None,
        step: Callable[..., tuple[torch.Tensor, ...]] = policy_step, keep: list[torch.Tensor] | None = None) -> Act:
    """Policy step on a batch of observations already on the model's device. `generator`:
    a random stream of its own (an evaluation beside training must not draw from the trainer's).
    `step`: policy_step or a compiled copy of it (which takes no `keep`: see ActorCritic.forward)."""
    extra = () if keep is None else (keep,)
    actions, logits, log_probs, values, entropy = step(model, obs, greedy, generator, *extra)
    return Act(actions.cpu().numpy(), actions, logits, log_probs, values, entropy)
