"""Evaluation speed: games/s of a 100-game evaluation (parallel envs, `a2c_tui.evaluate`)
against one env playing whole games one after another with a batch-of-one policy (the
course notebook's way), with the same weights and the same preprocessing.

    .venv/bin/python bench/eval_speed.py [--checkpoint RUN/latest.pt] [--episodes 100]
        [--envs 16] [--baseline-games 10] [--json out.json]

Without --checkpoint it uses freshly initialised weights (short, random-looking games).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch

from a2c_tui import checkpoints as ckpt
from a2c_tui import config as cfg
from a2c_tui.evaluate import evaluate
from a2c_tui.model import ActorCritic, act
from a2c_tui.record import AtariGame
from a2c_tui.trainer import config_from_payload


def one_env_at_a_time(config: cfg.Config, weights, games: int, seed: int = 7) -> tuple[float, list[float]]:
    game = AtariGame(config.env.id, seed=seed, noop_max=config.env.noop_max,
                     max_episode_frames=config.env.max_episode_frames)
    model = ActorCritic(game.observation_shape, game.n_actions)
    model.load_state_dict(weights)
    rng = np.random.default_rng(seed)
    scores = []
    start = time.perf_counter()
    for _ in range(games):
        obs, score, over = game.reset(rng), 0.0, False
        while not over:
            action = int(act(model, torch.from_numpy(obs)[None]).actions[0])
            step = game.step(action)
            obs, score, over = step.obs, score + step.reward, step.game_over
        scores.append(score)
    return games / (time.perf_counter() - start), scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--config", default="configs/space_invaders.toml")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--baseline-games", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()

    if args.checkpoint:
        payload = ckpt.load(args.checkpoint)
        config, weights = config_from_payload(payload, args.checkpoint), payload["model"]
    else:
        config = cfg.load(args.config)
        torch.manual_seed(0)
        weights = ActorCritic((4, 84, 84), 6).state_dict()

    start = time.perf_counter()
    result = evaluate(config, weights, episodes=args.episodes, num_envs=args.envs)
    parallel = args.episodes / (time.perf_counter() - start)
    print(f"parallel evaluation ({args.envs} envs): {parallel:.3f} games/s, mean score {result['mean']:.1f}, "
          f"mean length {result['mean_length']:.0f}", flush=True)
    serial, scores = one_env_at_a_time(config, weights, args.baseline_games)
    print(f"one env at a time: {serial:.3f} games/s, mean score {np.mean(scores):.1f}", flush=True)
    print(f"speed-up: {parallel / serial:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"parallel_games_per_s": parallel, "serial_games_per_s": serial, "ratio": parallel / serial,
                       "envs": args.envs, "episodes": args.episodes, "parallel_mean": result["mean"],
                       "serial_mean": float(np.mean(scores)), "checkpoint": args.checkpoint}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
