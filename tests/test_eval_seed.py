"""An evaluation's seed fixes its games, and it leaves the trainer's random stream alone."""

import torch

from a2c_tui import config as cfg
from a2c_tui.run.evaluate import evaluate
from a2c_tui.learn.model import ActorCritic


def test_same_seed_same_games_and_global_rng_untouched():
    config = cfg.load("configs/cartpole.toml")
    torch.manual_seed(0)
    weights = ActorCritic((4,), 2).state_dict()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = evaluate(config, weights, episodes=6, num_envs=3, seed=5)
    assert torch.equal(torch.get_rng_state(), before), "evaluation drew from the global torch RNG"
    second = evaluate(config, weights, episodes=6, num_envs=3, seed=5)
    other = evaluate(config, weights, episodes=6, num_envs=3, seed=6)
    assert first["scores"] == second["scores"]
    assert first["scores"] != other["scores"]
