"""jebm_lite.experiments.fig1: markov against deterministic top-down path, end to end in the ci profile."""

from __future__ import annotations

import json
import math

import pytest

from jebm_lite.experiments import fig1

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# a short ci training with a narrow model: the whole experiment (two trainings, two measurements) in seconds
FAST = ["train.max_steps=3", "train.ckpt_every=3", "train.log_every=1", "model.hidden=32", "data.subset=128"]


def test_end_to_end_ci_writes_one_record_per_variant(tmp_path, shared_data, capsys):
    results, runs = tmp_path / "results", tmp_path / "runs"
    argv = ["--profile", "ci", "--results", str(results), "--runs", str(runs), *FAST]
    assert fig1.main(argv) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in results.glob("*.json")) == ["deterministic_ci.json", "markov_ci.json"]
    assert (runs / "fig1-markov-ci" / "result.json").is_file() and (runs / "fig1-deterministic-ci").is_dir()
    recs = fig1.load_results(results, "ci")
    assert [r["variant"] for r in recs] == ["markov", "deterministic"]
    for r in recs:
        assert r["topdown"] == r["variant"] == r["config"]["model"]["topdown"]
        assert r["config"]["model"]["likelihood"] == "bernoulli" and r["config"]["model"]["free_bits"] == 0
        assert r["profile"] == "ci" and r["seed"] == recs[0]["seed"] and r["train_steps"] == 3
        for key in ("device", "torch", "commit", "date", "train_wall_s", "measure_wall_s", "wall_s"):
            assert key in r
        assert r["rollbacks"] == 0 and r["lr_scale"] == 1.0  # the divergence guard did not intervene
        assert r["layers"] == 6 and len(r["kl"]) == 6 and all(math.isfinite(k) and k >= -1e-6 for k in r["kl"])
        assert math.isfinite(r["test_neg_elbo"]) and r["n_test"] == 500
        assert r["groups"] == {"bottom": [0, 1], "middle": [2, 3], "top": [4, 5]}
        assert set(r["by_group"]) == {"bottom", "middle", "top", "all"}
        assert set(r["by_layer"]) == {f"z_{i}" for i in range(1, 7)} | {"all"}
        assert (r["n_contexts"], r["n_resamples"]) == fig1.STAT_SIZES["ci"]
        for g in r["by_group"].values():
            assert 0 <= g["class_change"] <= 1 and g["pixel_var"] >= 0
        assert abs(r["by_group"]["all"]["pixel_var_frac"] - 1) < 1e-9
    assert fig1.verdict(recs) in out
    # a second call returns the stored records (same config): nothing is trained or measured again
    before = {p.name: p.read_text() for p in results.glob("*.json")}
    assert fig1.main(argv) == 0
    assert {p.name: p.read_text() for p in results.glob("*.json")} == before


def _rec(variant: str, changes: tuple[float, float, float], seed: int = 1234) -> dict:
    groups = {"bottom": [0, 1], "middle": [2, 3], "top": [4, 5]}
    by = {g: {"pixel_var": 0.01, "pixel_var_frac": 0.3, "class_change": c} for g, c in zip(groups, changes)}
    by["all"] = {"pixel_var": 0.03, "pixel_var_frac": 1.0, "class_change": 0.9}
    return {"variant": variant, "seed": seed, "profile": "cpu", "groups": groups, "by_group": by}


def test_verdict_names_the_group_with_the_most_digit_changes_per_variant():
    text = fig1.verdict([_rec("deterministic", (0.05, 0.2, 0.6)), _rec("markov", (0.5, 0.01, 0.0))])
    assert text.count(".") == 1 and text.endswith(".")
    markov, det = text.split("; in the ")
    assert markov.startswith("In the Markov-chain model the bottom (ε1, ε2) group holds the most digit changes")
    assert "50 %" in markov
    assert det.startswith("deterministic-path model the top (ε5, ε6) group holds the most digit changes")
    assert "60 %" in det
    # ties and several seeds
    tie = fig1.verdict([_rec("markov", (0.4, 0.1, 0.4)), _rec("markov", (0.4, 0.1, 0.4), seed=1)])
    assert "2 seeds" in tie and "bottom (ε1, ε2) and top (ε5, ε6) groups tie" in tie
    with pytest.raises(ValueError):
        fig1.verdict([])


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    assert fig1.main(["--profile", "ci", "--results", str(tmp_path), "model.topdown=markov"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "--variants" in err
    assert fig1.main(["--profile", "ci", "--results", str(tmp_path), "model.no_such_key=1"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        fig1.main(["--variants", "sideways"])
    assert e.value.code == 2


def test_paths_and_configs():
    cfg = fig1.variant_config("deterministic", "cpu")
    assert cfg.model.topdown == "deterministic" and cfg.model.likelihood == "bernoulli" and cfg.model.free_bits == 0
    assert cfg.train.max_steps == fig1.variant_config("markov", "cpu").train.max_steps
    assert str(fig1.variant_run_dir("deterministic", cfg)) == "runs/fig1-deterministic-cpu"
    assert fig1.result_path("results/fig1", "deterministic", cfg).name == "deterministic_cpu.json"
    other = fig1.variant_config("markov", "cpu", seed=7)
    assert fig1.result_path("r", "markov", other).name == "markov_seed7_cpu.json"
    assert fig1.variant_run_dir("markov", other).name == "fig1-markov-seed7-cpu"
    assert fig1.variant_run_dir("markov", fig1.variant_config("markov", "ci")) is None
    json.dumps(fig1.STAT_SIZES)
