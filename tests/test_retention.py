"""Retention keeps what the checkpoints table shows about best.pt."""

import json

import torch

from a2c_tui.run import checkpoints as ckpt


def _save(run_dir, step):
    path = run_dir / f"step_{step}.pt"
    ckpt.save(path, {"step": step, "w": torch.zeros(2)})
    ckpt.update_index(run_dir, {"latest": path.name, "files": {path.name: {"step": step, "score": float(step)}}})
    return path


def test_pruned_best_keeps_its_evaluation(tmp_path):
    first = _save(tmp_path, 100)
    ckpt.record_evaluation(first, {"mean": 321.0, "scores": [321.0]})  # best.pt -> step_100 by evaluation
    for step in (200, 300, 400):
        _save(tmp_path, step)
    removed = ckpt.prune(tmp_path, keep_last=2)

    assert first in removed and not first.exists()
    rows = {info.path.name: info for info in ckpt.list_checkpoints(tmp_path)}
    assert "best.pt" in rows, "best.pt gets its own row once its step file is gone"
    assert rows["best.pt"].eval_mean == 321.0
    assert rows["best.pt"].step == 100
    assert json.loads((tmp_path / "best.eval.json").read_text())["mean"] == 321.0


def test_deleting_the_best_checkpoint_drops_best_pt_and_its_tag(tmp_path):
    first, second = _save(tmp_path, 100), _save(tmp_path, 200)
    ckpt.record_evaluation(first, {"mean": 321.0, "scores": [321.0]})  # best.pt -> step_100
    assert [i.tags for i in ckpt.list_checkpoints(tmp_path)] == [("latest",), ("best",)]

    ckpt.delete(first)

    assert [(i.path.name, i.tags) for i in ckpt.list_checkpoints(tmp_path)] == [(second.name, ("latest",))]
    index = ckpt.read_index(tmp_path)
    assert "best" not in index and first.name not in index["files"]
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "best.eval.json").exists()
    assert not ckpt.eval_result_path(first).exists()


def test_deleting_another_checkpoint_keeps_best(tmp_path):
    first, second = _save(tmp_path, 100), _save(tmp_path, 200)
    ckpt.record_evaluation(first, {"mean": 321.0, "scores": [321.0]})
    ckpt.delete(second)
    assert [(i.path.name, i.tags) for i in ckpt.list_checkpoints(tmp_path)][-1] == (first.name, ("best",))
    assert (tmp_path / "best.pt").exists() and ckpt.read_index(tmp_path)["best"] == first.name


def test_the_index_forgets_rotated_out_files_but_not_what_best_and_latest_were(tmp_path):
    first = _save(tmp_path, 100)
    ckpt.record_evaluation(first, {"mean": 321.0, "scores": [321.0]})  # best.pt -> step_100
    for step in range(200, 1100, 100):
        _save(tmp_path, step)
        ckpt.prune(tmp_path, keep_last=2)
    entries = ckpt.read_index(tmp_path)["files"]
    # step_100 stays known (best.pt was linked from it); 200..700 were rotated out and forgotten
    # at the next write; step_800 went after the last write (forgotten at the next save)
    assert sorted(entries, key=lambda n: int(n[5:-3])) == ["step_100.pt", "step_800.pt", "step_900.pt",
                                                           "step_1000.pt"]
