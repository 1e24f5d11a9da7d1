"""Evaluation speed: games/s of a 100-game evaluation (parallel envs, `a2c_tui.run.evaluate`)
against one env playing whole games one after another with a batch-of-one policy (the
course notebook's way: gymnasium's Atari env and wrappers), with the same weights; and
against a2c-tui's own single-game env, which skips gymnasium's Python wrappers.

    .venv/bin/python bench/eval_speed.py [--checkpoint RUN/latest.pt] [--episodes 100]
        [--envs 16] [--env-threads 0] [--baseline-games 10] [--rounds 1] [--precision fp32|bf16|auto]
        [--json out.json]

Without --checkpoint it uses freshly initialised weights (short, random-looking games).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import a2c_tui  # noqa: F401  (first: sets OMP_WAIT_POLICY before torch loads)
import numpy as np
import torch

from a2c_tui import config as cfg
from a2c_tui.learn.model import ActorCritic, act
from a2c_tui.run import checkpoints as ckpt
from a2c_tui.run import evaluate as evaluate_module
from a2c_tui.run.record import AtariGame
from a2c_tui.run.trainer import config_from_payload
from throughput import clocked


def notebook_way(config: cfg.Config, weights, games: int, seed: int = 7) -> tuple[float, list[float], float, float]:
    """One gymnasium Atari env with gymnasium's own DeepMind wrappers (what the course
    notebook's atari_wrappers do), whole games one after another, a batch of one per step.
    Returns games/s, the scores, agent steps/s (the games' lengths differ from the evaluation's:
    steps/s compares the two sides at equal game lengths), all without making the env, and the
    seconds making it took."""
    import ale_py
    import gymnasium as gym
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    from a2c_tui.learn.envs import atari_rom

    gym.register_envs(ale_py)
    made = time.perf_counter()
    name = "".join(part.title() for part in atari_rom(config.env.id).split("_"))
    env = gym.make(f"ALE/{name}-v5", frameskip=1, repeat_action_probability=0.0,
                   max_num_frames_per_episode=config.env.max_episode_frames)
    env = FrameStackObservation(AtariPreprocessing(env, noop_max=config.env.noop_max, frame_skip=4, screen_size=84,
                                                   terminal_on_life_loss=False, grayscale_obs=True), 4)
    making = time.perf_counter() - made
    model = ActorCritic((4, 84, 84), int(env.action_space.n))
    model.load_state_dict(weights)
    scores, steps = [], 0
    generator = torch.Generator().manual_seed(seed)  # every round plays the same games
    start = time.perf_counter()
    for game in range(games):
        obs, _ = env.reset(seed=seed + game)
        score, over = 0.0, False
        while not over:
            action = int(act(model, torch.from_numpy(np.asarray(obs))[None], generator=generator).actions[0])
            obs, reward, terminated, truncated, _ = env.step(action)
            score += float(reward)
            steps += 1
            over = terminated or truncated
        scores.append(score)
    env.close()
    elapsed = time.perf_counter() - start
    return games / elapsed, scores, steps / elapsed, making


def one_env_at_a_time(config: cfg.Config, weights, games: int, seed: int = 7) -> tuple[float, list[float]]:
    """The same with a2c-tui's own single-game env (record.AtariGame, no gymnasium wrappers)."""
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
    parser.add_argument("--env-threads", type=int, default=0, help="emulator threads (0: one per core)")
    parser.add_argument("--baseline-games", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of both (the ratio is their median)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"),
                        help="the evaluation's run.precision (default: the checkpoint's); the baseline stays fp32")
    parser.add_argument("--json")
    args = parser.parse_args()

    if args.checkpoint:
        payload = ckpt.load(args.checkpoint)
        config, weights = config_from_payload(payload, args.checkpoint), payload["model"]
    else:
        config = cfg.load(args.config)
        torch.manual_seed(0)
        weights = ActorCritic((4, 84, 84), 6).state_dict()

    # An evaluation on its own uses every core for the emulators, whatever the run trained with.
    config = config.replace(**{"env.num_threads": args.env_threads})
    if args.precision:
        config = config.replace(**{"run.precision": args.precision})

    def parallel_speed() -> tuple[float, dict, float, float]:
        """As notebook_way: games/s, the result, agent steps/s of the counted games (the uncounted
        tail is time spent), all without making the envs, and the seconds making them took
        (ale-py builds a colour-averaging palette for every env it makes: ~0.2 s each)."""
        spent: dict[str, float] = {"make": 0.0}
        make_envs = evaluate_module.make_envs
        evaluate_module.make_envs = clocked(spent, "make", make_envs)
        try:
            start = time.perf_counter()
            result = evaluate_module.evaluate(config, weights, episodes=args.episodes, num_envs=args.envs)
            elapsed = time.perf_counter() - start - spent["make"]
        finally:
            evaluate_module.make_envs = make_envs
        return args.episodes / elapsed, result, args.episodes * result["mean_length"] / elapsed, spent["make"]

    # Rounds alternate the order (ours, one env; one env, ours; ...): a shared machine's speed
    # drifts from minute to minute, and a round's ratio compares neighbouring minutes.
    rounds = []
    for i in range(args.rounds):
        if i % 2 == 0:
            (parallel, result, parallel_steps, parallel_make) = parallel_speed()
            (serial, scores, serial_steps, serial_make) = notebook_way(config, weights, args.baseline_games)
        else:
            (serial, scores, serial_steps, serial_make) = notebook_way(config, weights, args.baseline_games)
            (parallel, result, parallel_steps, parallel_make) = parallel_speed()
        # the same games/s with the envs' making counted, each side's as its run of `episodes` games pays it
        with_making = (args.episodes / (args.episodes / parallel + parallel_make),
                       args.episodes / (args.episodes / serial + serial_make))
        steps_with_making = (parallel_steps * with_making[0] / parallel, serial_steps * with_making[1] / serial)
        rounds.append((parallel, serial, parallel_steps, serial_steps, *steps_with_making))
        print(f"round {i + 1}: parallel evaluation ({args.envs} envs) {parallel:.3f} games/s, {parallel_steps:.0f} "
              f"steps/s (mean score {result['mean']:.1f}, mean length {result['mean_length']:.0f}; making the envs "
              f"{parallel_make:.2f} s); one env at a time, gymnasium wrappers (the notebook's way) {serial:.3f} games/s, "
              f"{serial_steps:.0f} steps/s (mean score {np.mean(scores):.1f}, mean length {serial_steps / serial:.0f}; "
              f"making the env {serial_make:.2f} s); ratio {parallel / serial:.2f}x by games, "
              f"{parallel_steps / serial_steps:.2f}x by agent steps, {steps_with_making[0] / steps_with_making[1]:.2f}x "
              f"by agent steps with the envs' making", flush=True)
    parallel = statistics.median(r[0] for r in rounds)
    serial = statistics.median(r[1] for r in rounds)
    ratio = statistics.median(r[0] / r[1] for r in rounds)
    step_ratio = statistics.median(r[2] / r[3] for r in rounds)
    made_ratio = statistics.median(r[4] / r[5] for r in rounds)
    print(f"median: {parallel:.3f} vs {serial:.3f} games/s; speed-up {ratio:.2f}x by games, {step_ratio:.2f}x by agent "
          f"steps, {made_ratio:.2f}x by agent steps with the envs' making (medians of the rounds' ratios)", flush=True)
    fast_serial, fast_scores = one_env_at_a_time(config, weights, args.baseline_games)
    print(f"one env at a time, a2c-tui's single-game env: {fast_serial:.3f} games/s, "
          f"mean score {np.mean(fast_scores):.1f}; speed-up {parallel / fast_serial:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"parallel_games_per_s": parallel, "notebook_games_per_s": serial,
                       "ratio_vs_notebook": ratio, "step_ratio_vs_notebook": step_ratio,
                       "step_ratio_with_making_vs_notebook": made_ratio, "rounds": rounds, "single_env_games_per_s": fast_serial,
                       "ratio_vs_single_env": parallel / fast_serial, "envs": args.envs, "episodes": args.episodes,
                       "parallel_mean": result["mean"], "notebook_mean": float(np.mean(scores)),
                       "single_env_mean": float(np.mean(fast_scores)), "checkpoint": args.checkpoint,
                       "precision": config.run.precision}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
