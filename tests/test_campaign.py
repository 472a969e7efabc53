"""The Tab. 1 campaign: code kits, the batched probe, the probe study, the EBM measures, each arm's verdict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from jebm_lite.analysis.codekit import CodeKit, load_kit, save_kit
from jebm_lite.analysis.metrics import latent_probe
from jebm_lite.analysis.probe_study import (
    ACTIVE_RMS,
    VARIANT_LABELS,
    VARIANTS,
    batched_probe,
    ebm_activity,
    probe_variants,
    variance_split,
)
from jebm_lite.config import get_config
from jebm_lite.experiments import campaign
from jebm_lite.models.ebm import JointEBMPrior
from jebm_lite.runtime import CheckpointError

ROOT = Path(__file__).resolve().parent.parent
NB = ROOT / "notebooks"


def toy_kit(n: int = 1200, m: int = 400, logvar: float = -6.0, ebm: dict | None = None) -> CodeKit:
    """Three 2-D layers: z1 noise, z2 weakly and z3 strongly separated by class (3 classes)."""
    g = torch.Generator().manual_seed(0)

    def codes(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(k) % 3
        centre = torch.stack([torch.cos(2.1 * y), torch.sin(2.1 * y)], 1)
        z1 = torch.randn(k, 2, generator=g)
        z2 = 0.5 * centre + torch.randn(k, 2, generator=g)
        z3 = 4.0 * centre + 0.3 * torch.randn(k, 2, generator=g)
        return torch.cat([z1, z2, z3], 1), y

    mu_tr, y_tr = codes(n)
    mu_te, y_te = codes(m)
    lv = lambda t: torch.full_like(t, logvar).half()  # noqa: E731
    return CodeKit((2, 2, 2), mu_tr, lv(mu_tr), y_tr, mu_te, lv(mu_te), y_te, ebm,
                   {"arm": "mnist-layer", "dataset": "mnist", "method": "joint", "seed": 0, "profile": "cpu"})


def test_kit_round_trip_and_a_flipped_byte_is_refused(tmp_path):
    kit = toy_kit()
    pt = save_kit(kit, tmp_path / "k.pt")
    back = load_kit(pt)
    assert back.z_dims == (2, 2, 2) and torch.equal(back.mu_train, kit.mu_train)
    assert torch.equal(back.logvar_test, kit.logvar_test) and torch.equal(back.y_test, kit.y_test)
    assert back.meta["method"] == "joint"
    raw = bytearray(pt.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    pt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="sha256"):
        load_kit(pt)


def test_batched_probe_is_the_one_at_a_time_probe():
    kit = toy_kit()
    tr, te = kit.layers("train"), kit.layers("test")
    seeds = [3, 7]
    one = [latent_probe(tr[1], kit.y_train, te[1], kit.y_test, seed=s, epochs=3).test_accuracy for s in seeds]
    both = batched_probe(torch.stack([tr[1], tr[1]]), kit.y_train, torch.stack([te[1], te[1]]), kit.y_test, seeds,
                         epochs=3)
    assert both == pytest.approx(one, abs=2.6e-3)  # at most one test code of 400 flips from float rounding
    assert one[0] != one[1] or seeds[0] == seeds[1]  # different probe seeds are different probes


def test_probe_variants_see_the_informative_layer_and_the_cost_of_sampling():
    rows = probe_variants(toy_kit(logvar=2.0), seeds=(0, 1), epochs=4)
    assert len(rows) == 2 * 4 * 3
    acc = {(r["variant"], r["seed"], r["layer"]): r["accuracy"] for r in rows}
    for s in (0, 1):
        assert acc[("mean-std", s, 3)] > 95  # the separated layer
        assert acc[("mean-std", s, 1)] < 50  # the noise layer: near chance (33 %)
        # sigma = e (logvar 2) on a class spacing of ~7: sampling costs accuracy
        assert acc[("sample-std", s, 3)] < acc[("mean-std", s, 3)] - 5
    split = variance_split({"a": rows, "b": rows})
    top = next(r for r in split if r["variant"] == "mean-std" and r["layer"] == 3)
    assert top["n_models"] == 2 and top["between_sd"] == 0.0  # two identical models
    assert top["within_sd"] >= 0.0


def test_variance_split_separates_probe_and_training_spread():
    def rows(values):
        return [{"variant": "mean-std", "seed": i, "layer": 1, "accuracy": v} for i, v in enumerate(values)]

    out = variance_split({"m1": rows([50.0, 52.0]), "m2": rows([60.0, 62.0])})
    (r,) = out
    assert r["within_sd"] == pytest.approx(2 ** 0.5)  # each model: var of (50, 52) = 2
    assert r["between_sd"] == pytest.approx(10 ** 1 / 2 ** 0.5)  # means 51, 61
    assert r["mean"] == pytest.approx(56.0)
    assert tuple(VARIANT_LABELS) == VARIANTS and len(set(VARIANT_LABELS.values())) == len(VARIANTS)


def test_ebm_activity_floor_and_an_active_ebm():
    cfg = get_config("mnist_ref_joint", profile="ci")
    torch.manual_seed(5)
    fresh_state = JointEBMPrior.from_config((2, 2, 2), cfg.ebm).state_dict()
    same = ebm_activity(toy_kit(ebm=fresh_state), cfg.ebm, cfg.prior_langevin, seed=5, n=500)
    assert same["endpoint_rms"] == 0.0 and not same["active"]  # the fresh EBM itself: the floor
    assert same["trained"]["move_rms"] > 0.5  # the chain moves (noise), whatever the EBM
    # the same network with its last layer scaled up (no spectral norm): a strongly tilted prior
    from dataclasses import replace

    plain = replace(cfg.ebm, spectral_norm=False)
    torch.manual_seed(6)
    prior = JointEBMPrior.from_config((2, 2, 2), plain)
    last = [m for m in prior.energy.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(50.0)
    tilted = ebm_activity(toy_kit(ebm=prior.state_dict()), plain, cfg.prior_langevin, seed=6, n=500)
    assert tilted["endpoint_rms"] >= ACTIVE_RMS and tilted["active"]
    assert tilted["trained"]["f_sd_prior"] > 10 * tilted["fresh"]["f_sd_prior"]


def test_arm_report_paired_interval_and_exact_mcnemar():
    arm = campaign.ARMS["A"]

    def rec(method, seed, acc):
        return {"dataset": "mnist", "method": method, "seed": seed, "accuracy": acc, "commit": "x", "device": "cpu"}

    recs = []
    for s, (dj, dv) in enumerate([(70, 60), (72, 58), (68, 61), (71, 59), (69, 62)]):
        recs += [rec("joint", s, [30, 50, dj]), rec("vlae", s, [30, 65 if s < 4 else 50, dv])]
    recs.append(rec("joint", 9, [1, 2, 3]))  # a half pair: left out
    r = campaign.arm_report(arm, recs)
    assert r["n_pairs"] == 5 and r["unpaired"] == [("joint", 9)]
    assert r["diff"] == pytest.approx(10.0)
    assert r["outcome"] == "holds" and r["ci_low"] > 0
    assert r["excludes_paper"] is True  # +15.6 lies above the interval
    assert r["pi_low"] < r["ci_low"] and r["pi_high"] > r["ci_high"]  # one more pair: a wider interval
    assert r["paper_in_pi"] is True  # a single pair of +15.6 is still a plausible draw
    assert r["clean"] == {"joint": 5, "vlae": 1} and r["discordant"] == (4, 0)
    assert r["mcnemar_p"] == pytest.approx(0.125)
    assert campaign.mcnemar_exact(5, 0) == pytest.approx(0.0625)
    assert campaign.mcnemar_exact(3, 3) == 1.0
    assert campaign.clean_hierarchy([30, 50, 60]) and not campaign.clean_hierarchy([30, 65, 60])
    row = campaign.verdict_rows({"A": r})[0]
    assert (row["pairs"], row["claim"], row["paper_in_ci"], row["clean"]) == (5, "holds", "no", "5 / 1 of 5")
    one = campaign.arm_report(arm, recs[:2])  # one pair: no interval, so no answer about the paper's value
    assert campaign.verdict_rows({"A": one})[0]["paper_in_ci"] is None


def test_the_rule_is_written_before_every_campaign_record():
    """RULE.md's first commit precedes the training commit of every record the campaign adds."""
    rule = "notebooks/results/tab1_campaign/RULE.md"
    try:
        first = subprocess.run(["git", "log", "--format=%H", "--diff-filter=A", "--", rule], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history")
    if not first:
        pytest.skip("no git history for the rule")
    rule_commit = first[-1]
    recs = []
    for arm in campaign.ARMS.values():
        for r in campaign.arm_records(arm, NB):
            new = arm.key == "B" or (arm.key == "A" and r["seed"] >= 3) or (arm.key == "C" and r["seed"] >= 3)
            if new:
                recs.append(r)
    for r in recs:
        sha = r["commit"].removesuffix("+dirty")
        assert not r["commit"].endswith("+dirty"), f"campaign record {r['method']} seed {r['seed']} from a dirty tree"
        ok = subprocess.run(["git", "merge-base", "--is-ancestor", rule_commit, sha], cwd=ROOT).returncode == 0
        assert ok, f"{r['dataset']} {r['method']} seed {r['seed']} was trained at {sha}, before the rule"


def test_every_kit_is_intact_and_matches_its_record():
    for kit in campaign.all_kits(NB):
        k = load_kit(kit)  # raises on a changed file
        rec_path = NB / k.meta["record"]
        from jebm_lite.io import read_json

        rec = read_json(rec_path)
        assert rec["seed"] == k.meta["seed"] and rec["method"] == k.meta["method"]
        assert rec.get("train_time_s") == k.meta["train_time_s"], f"{kit} is not from the run its record scored"


def test_lane_ci_smoke_writes_records_in_the_rule_order(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("JEBM_PROFILE", "ci")
    monkeypatch.setenv("JEBM_DATA", str(shared_data))
    campaign.lane(tmp_path, tmp_path / "runs", "ci", only=[("B", 0)], retrain=False)
    got = sorted(p.name for p in (tmp_path / "results/tab1_ref_nonorm").glob("*.json"))
    assert got == ["mnist_joint_seed0_ci.json", "mnist_vlae_seed0_ci.json"]
    assert campaign.ORDER[0] == ("B", 0) and len(set(campaign.ORDER)) == len(campaign.ORDER)
    assert {k for k, _ in campaign.ORDER} == set(campaign.ARMS)


def test_findings_table_reads_the_records(tmp_path):
    from jebm_lite.experiments import findings

    rows = findings.glance_rows(NB)
    assert [r["chapter"] for r in rows[:3]] == ["6", "6", "6"]
    for row, key in zip(rows, "ABC"):
        rep = campaign.arm_report(campaign.ARMS[key], campaign.arm_records(campaign.ARMS[key], NB))
        assert row["verdict"].startswith(findings.VERDICT_WORDS[rep["outcome"]])
        assert ("outside the interval" in row["verdict"]) == bool(rep["excludes_paper"]), row["verdict"]
        if rep["diff"] is not None:
            assert f"{rep['diff']:+.1f} points" in row["this book"]
    # an empty results folder: every arm untested, no Fig. 4 row
    (tmp_path / "results").mkdir()
    empty = findings.glance_rows(tmp_path)
    assert [r["verdict"] for r in empty] == ["not yet tested"] * 3
    out = tmp_path / "f.md"
    assert findings.main(["--root", str(NB), "--out", str(out)]) == 0
    assert out.read_text().startswith("| claim | paper | this book | verdict | chapter |")


def test_ebm_rows_name_models_by_arm_and_carry_the_rule_verdict():
    study = {"arm": "mnist-layer", "method": "joint", "seed": 3,
             "ebm": {"trained": {"f_sd_prior": 0.2, "f_gap": 0.1, "move_rms": 1.45},
                     "fresh": {"f_sd_prior": 0.007, "move_rms": 1.44}, "endpoint_rms": 0.087, "active": False}}
    vlae = {"arm": "mnist-layer", "method": "vlae", "seed": 3}  # no EBM: no row
    rows = campaign.ebm_rows([study, vlae])
    assert len(rows) == 1 and rows[0]["model"] == "A: MNIST, LayerNorm, seed 3"
    assert rows[0]["active"] is False and rows[0]["end"] == pytest.approx(0.087)
    assert rows[0]["move"] == pytest.approx(1.45) and rows[0]["fresh_move"] == pytest.approx(1.44)
