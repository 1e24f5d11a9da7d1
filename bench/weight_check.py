"""What the non-finite-weights check costs per update: one A2C update of the default
SpaceInvaders shape (Nature CNN, 16 envs x 5 steps) timed with the check as shipped and with
the fused weight norm stubbed out, plus the check on its own. Needs only torch (no emulator).

    .venv/bin/python bench/weight_check.py [--device cpu|cuda] [--updates 200] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import torch

from a2c_tui.learn.a2c import make_optimizer, update
from a2c_tui.learn.model import ActorCritic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = ActorCritic((4, 84, 84), 6).to(device)
    optimizer = make_optimizer("rmsprop_tf", model.parameters(), 7e-4, 0.99, 1e-5)
    batch = 16 * 5
    obs = torch.randint(0, 255, (batch, 4, 84, 84), dtype=torch.uint8, device=device)
    actions = torch.randint(0, 6, (batch,), device=device)
    targets = torch.randn(batch, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, repeats: int) -> float:
        """Median seconds of fn() over repeats (after a warm-up)."""
        for _ in range(10):
            fn()
        sync()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    one_update = lambda: update(model, optimizer, obs, actions, targets, 1e-9, 0.25, 0.01, 0.5)  # noqa: E731
    params = list(model.parameters())
    check = torch.no_grad()(lambda: float(torch.stack(torch._foreach_norm(params)).sum()))
    real_norm = torch._foreach_norm
    zero = torch.zeros((), device=device)
    results = {}
    for round_ in range(2):  # alternate, so that a change in machine load hits both
        results.setdefault("with check", []).append(timed(one_update, args.updates))
        # Only the weight check calls it without a norm type (grad clipping passes one).
        torch._foreach_norm = lambda tensors, *a, **k: real_norm(tensors, *a, **k) if a or k else [zero]
        try:
            results.setdefault("check stubbed", []).append(timed(one_update, args.updates))
        finally:
            torch._foreach_norm = real_norm
    alone = timed(check, args.updates * 5)
    with_check, without = min(results["with check"]), min(results["check stubbed"])
    print(f"{device.type}, {sum(p.numel() for p in params):,} weights, batch {batch}: update {with_check * 1e3:.2f} ms "
          f"with the check, {without * 1e3:.2f} ms without ({(with_check - without) * 1e3:+.3f} ms, "
          f"{(with_check - without) / without:+.1%}); the check alone (with its own sync) {alone * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
