"""Write notebooks/04_joint_prior.ipynb (cells only; execute it with nbconvert to store outputs)."""

from __future__ import annotations

from nbgen import Chapter

TITLE = "Chapter 4: The joint latent-space EBM prior"
nb = Chapter(TITLE)
md, code = nb.md, nb.code

md(r"""
# Chapter 4: The joint latent-space EBM prior

:::{admonition} In this chapter
:class: tip

**You will learn**
- the model of {cite:t}`cui2023hierarchical`: one energy-based prior over **all** layers of a
  VLAE-style hierarchical generator (Eqs. 3-5, 8), each equation next to the `jebm_lite` function
  that computes it;
- how it is learned: a variational objective for the generator and the inference network
  (Eqs. 9, 11, 12) and a contrastive one for the EBM, with short-run Langevin prior samples
  (Eqs. 10, 13, 14);
- the two readings of "hierarchical sampling" (Fig. 4): **swapping** one layer's codes between joint
  prior samples, as the reference code does, and **redrawing** one layer from its conditional by
  Langevin with the others held;
- the latent classifier of Tab. 1 on MNIST and Fashion-MNIST, over three seeds, beside VLAE with the
  same networks and beside the paper's numbers.

**Prerequisites** {doc}`01_lebm` (the LEBM prior and Langevin), {doc}`03_vlae` (the hierarchical
generator and the per-layer probe), {doc}`../book/notation`.

**Papers** {cite:t}`cui2023hierarchical` (the model, Secs. 3 and 5.1, Fig. 4, Tab. 1),
{cite:t}`zhao2017vlae` (VLAE), {cite:t}`pang2020lebm` (the single-layer LEBM),
{cite:t}`nijkamp2019shortrun` (short-run Langevin).

**Run time (measured)** `ci` profile: under a minute under nbval on 2 CPU cores (30 iterations
per model). `cpu` profile: the models are the seed-0 runs of the table (training time printed
below, from their `result.json`); the table's twelve runs are trained by one command (see
{ref}`ch04-table`) and this notebook only reads their result files.
:::
""")

nb.setup_cell()

code(r'''
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display
from myst_nb import glue

import jebm_lite.learners
import jebm_lite.runs
from jebm_lite import hierarchy, latent_table, metrics, objectives, sampling
from jebm_lite.data import as_tensors, get_dataset

CI = PROFILE == "ci"
''')

md(r"""
## The model

### A joint EBM prior over all layers (Eq. 3)

The latent code is split into layers $\vz = (\vz_1, \dots, \vz_L)$, bottom ($\vz_1$, next to the
image) to top. Instead of independent Gaussians (VLAE, chapter 3) or Gaussian conditionals (chapter
2), **one** energy-based model couples all of them:

$$
p_\alpha(\vz) = \frac{1}{Z(\alpha)} \exp\big(f_\alpha([\vz_1, \dots, \vz_L])\big)\, p_0(\vz),
\qquad p_0(\vz) = \prod_{i=1}^{L} \N(\vz_i; 0, I),
$$ (eq-joint-prior)

where $[\cdot]$ is concatenation and $f_\alpha$ is a small MLP, the negative energy. It is the LEBM
prior of chapter 1 on the concatenated code; what is new is that $f_\alpha$ sees every layer at once,
so it can express relations **between** layers (which top codes go with which bottom codes), that an
independent Gaussian prior cannot. Up to $\log Z(\alpha)$ its log-density is
$f_\alpha(\vz) - \|\vz\|^2/2$:

```{literalinclude} /jebm_lite/models/ebm.py
:pyobject: JointEBMPrior.log_prob_unnorm
```

### The hierarchical generator and the ladder inference network (Eqs. 4, 5, 8)

The generator is the VLAE generator of chapter 3, $\vx \sim \N(g_\beta(\vz), \sigma^2 I)$ (Eq. 4) with

$$
h_L = g_L(\vz_L), \qquad h_i = g_i(\vz_i, h_{i+1}),\ i = L-1, \dots, 1, \qquad g_\beta(\vz) = h_1,
$$ (eq-joint-gen)

(Eq. 5; `HierarchicalGenerator.features`, shown in chapter 3). Our MNIST network (preset
`mnist_small`: three 2-D layers, 3.2 M parameters like the paper's) merges a lower code by VLAE's
**gated add**, $g_i(\vz_i, h_{i+1}) = \text{MLP}(h_{i+1} + \gamma_i \odot \text{LReLU}(W_i \vz_i))$ with
a learned gate $\gamma_i$ that starts at 0.1; chapter 5 shows why that matters. The inference
network is the matching ladder (Eq. 8, `LadderInference.forward`):
$q_\phi(\vz \mid \vx) = \prod_i \N(\vz_i; \vmu_i(r_{i-1}), \text{diag}\,\sigma_i^2(r_{i-1}))$ with
$r_0 = \vx$, $r_i = \text{trunk}_i(r_{i-1})$: the top code is read from the deepest features.
""")

code(r'''
ds_cfg = {"mnist": latent_table.cell_config("mnist", "joint", seed=0),
          "fmnist": latent_table.cell_config("fmnist", "joint", seed=0)}
cfg = ds_cfg["mnist"]
summary = {
    "data": f"{cfg.data.name} (train), subset {cfg.data.subset}",
    "z_dims (bottom -> top)": "2, 2, 2",
    "generator / inference": f"{cfg.model.preset}, merge {cfg.model.merge}, sigma {cfg.model.sigma}",
    "EBM f": f"MLP {cfg.ebm.layers} x {cfg.ebm.nef} ({cfg.ebm.activation}), spectral norm {cfg.ebm.spectral_norm}",
    "prior Langevin (Eqs. 13-14)": f"{cfg.prior_langevin.steps} steps, s = {cfg.prior_langevin.step_size}, from N(0, I)",
    "Adam (generator + inference)": f"lr {cfg.optim.lr_g:g}, betas {cfg.optim.betas_g}, weight decay {cfg.optim.weight_decay_g:g}",
    "Adam (EBM)": f"lr {cfg.optim.lr_e:g}, betas {cfg.optim.betas_e}",
    "iterations x batch": f"{cfg.train.max_steps} x {cfg.train.batch_size}",
    "seed": cfg.train.seed,
}
display(pd.Series(summary, name=f"mnist_joint ({PROFILE} profile)").to_frame())
''')

md(r"""
### Learning (Eqs. 9-12)

Learning minimises the KL divergence between the data-side joint $q_\text{data}(\vx)\,q_\phi(\vz
\mid \vx)$ and the model-side joint $p_\alpha(\vz)\,p_\beta(\vx \mid \vz)$ (Eq. 9); this equals the
negative ELBO of the model with the EBM prior, up to the data entropy. Its gradients:

$$
\nabla_\beta:\ \E_{q}\big[\nabla_\beta \log p_\beta(\vx \mid \vz)\big], \qquad
\nabla_\phi:\ \nabla_\phi \E_{q_\phi(\vz \mid \vx)}\big[\log p_\beta(\vx \mid \vz) + f_\alpha(\vz)
 + \log p_0(\vz) - \log q_\phi(\vz \mid \vx)\big]
$$

(Eqs. 11 and 12; $\log Z(\alpha)$ does not depend on $\beta, \phi$). In code both are one loss, the
reconstruction error, the single-sample KL of each layer against $\N(0, I)$, and $-f_\alpha$ at the
inferred codes:

```{literalinclude} /jebm_lite/objectives.py
:pyobject: joint_inference_loss
```

The EBM follows the usual maximum-likelihood gradient, $f_\alpha$ at inferred codes against
$f_\alpha$ at prior samples (Eq. 10):

$$
\nabla_\alpha = \E_{q_\text{data}(\vx) q_\phi(\vz \mid \vx)}\big[\nabla_\alpha f_\alpha(\vz)\big]
 - \E_{p_\alpha(\vz)}\big[\nabla_\alpha f_\alpha(\vz)\big],
$$ (eq-joint-ebm)

`objectives.ebm_loss` (a loss to minimise: `mean f(z_prior) - mean f(z_post)`).

### Prior sampling (Eqs. 13-14)

The prior samples are short-run Langevin chains, $K = 60$ steps from $\N(0, I)$:

$$
\vz_{t+1} = \vz_t + \frac{s^2}{2} \nabla_\vz \log p_\alpha(\vz_t) + s\,\veps_t, \qquad
\nabla_\vz \log p_\alpha(\vz) = \nabla_\vz f_\alpha(\vz) - \vz,
$$ (eq-joint-langevin)

(`sampling.langevin` for Eq. 13, `sampling.sample_prior` for Eq. 14). Since $\vz$ has six numbers
and $f_\alpha$ is a small MLP, 60 steps cost little (chapter 1 measured it; the book's
performance page has the fast path). One training iteration, `HierarchicalLearner.train_step`:

:::{admonition} The code: `HierarchicalLearner.train_step`
:class: dropdown

```{literalinclude} /jebm_lite/learners.py
:pyobject: HierarchicalLearner.train_step
```
:::

The same three pieces, called by hand on one batch of the trained model below.
""")

code(r'''
runs = {}
for ds, c in ds_cfg.items():
    learner, history, run = latent_table.cell_run(c)
    learner.eval()
    runs[ds] = {"learner": learner, "history": history, "result": run.read_result(), "path": run.path}
    r = runs[ds]["result"]
    print(f"{ds:6s} {run.path}: {r['steps']} iterations in {r['wall_time_s'] / 60:.1f} min on {r['device']} "
          f"({r['rollbacks']} roll-backs)")
    glue(f"ch04_{ds}_train_min", r["wall_time_s"] / 60, display=False)
    glue(f"ch04_{ds}_steps", r["steps"], display=False)
model = runs["mnist"]["learner"]
''')

code(r'''
x_test, y_test = as_tensors(get_dataset("mnist", "test", subset=1000 if CI else None), device=DEVICE)
x_b = x_test[:100]
lc = cfg.prior_langevin
with torch.no_grad():
    mus, logvars = model.posterior(x_b)                      # Eq. 8
    zs = [objectives.reparameterize(m, lv) for m, lv in zip(mus, logvars)]
    x_hat = model.generator(zs)                              # Eqs. 4-5
    f_post = model.prior.f(zs)                               # f at inferred codes
    loss, parts = objectives.joint_inference_loss(x_b, x_hat, zs, mus, logvars, f_post, cfg.model.sigma)  # Eqs. 11-12
trace = sampling.sample_prior(model.prior, 100, lc.steps, lc.step_size, record=True,
                              generator=torch.Generator(DEVICE).manual_seed(0))  # Eqs. 13-14
with torch.no_grad():
    f_prior = model.prior.f(trace.z)
    e_loss = objectives.ebm_loss(f_prior, f_post)            # Eq. 10
print(f"Eqs. 11-12: loss {float(loss):.1f} = reconstruction {float(parts['rec']):.1f} + KL "
      + " + ".join(f"{float(k):.2f}" for k in parts["kl"]) + f" - mean f {float(f_post.mean()):.3f}")
print(f"Eq. 10:     mean f(z-) - mean f(z+) = {float(f_prior.mean()):.3f} - {float(f_post.mean()):.3f} = {float(e_loss):.3f}")
lp = trace.log_prob.mean(1).cpu()
print(f"Eq. 14:     mean log p(z) (unnormalised) along the prior chains: {lp[0]:.2f} at t=0 -> {lp[-1]:.2f} at t={trace.steps}")
''')

md(r"""
## Training diagnostics

Left: $f_\alpha$ at the inferred codes of each training batch and at the prior samples (the
diagnostic of chapter 1); the EBM is keeping up when the two curves stay together. Middle: the KL
term of each layer. Right: the reconstruction error.
""")

code(r'''
fig, axes = plt.subplots(2, 3, figsize=(13, 6.2))
for row, ds in enumerate(("mnist", "fmnist")):
    hist = runs[ds]["history"]
    rows = [h for h in hist if "event" not in h]
    viz.plot_energy_diagnostic(hist, ax=axes[row, 0], smooth=50)
    st = np.array([h["step"] for h in rows])
    for i in range(3):
        v = np.array([h[f"kl/{i + 1}"] for h in rows])
        k = max(1, min(50, len(v) // 5))
        axes[row, 1].plot(st[k - 1:], np.convolve(v, np.ones(k) / k, mode="valid"), color=viz.LAYER_COLORS[i],
                          label=f"$z_{i + 1}$")
    axes[row, 1].set_title(f"{ds}: KL term per layer")
    axes[row, 1].set_xlabel("iteration")
    axes[row, 1].legend(fontsize=8)
    viz.plot_history(hist, ["mse"], smooth=50, axes=[axes[row, 2]])
    axes[row, 2].set_yscale("log")
    axes[row, 2].set_title(f"{ds}: reconstruction MSE ([-1, 1] scale)")
    axes[row, 0].set_title(f"{ds}: " + axes[row, 0].get_title())
fig.tight_layout()
plt.show()
gaps = {}
for ds in ("mnist", "fmnist"):
    rows = [h for h in runs[ds]["history"] if "event" not in h]
    last = rows[-min(200, len(rows)):]
    gaps[ds] = float(np.mean([h["energy/post"] - h["energy/prior"] for h in last]))
    glue(f"ch04_{ds}_gap", gaps[ds], display=False)
print("mean f(z+) - f(z-) over the last 200 iterations:", {k: round(v, 3) for k, v in gaps.items()})
''')

md(r"""
## Samples and reconstructions

Prior samples $g_\beta(\vz)$ with $\vz$ from 60-step prior chains, and reconstructions of test
images from their posterior means. Six numbers per image cannot hold much detail; the question of
this chapter is **how** the hierarchy splits them.
""")

code(r'''
x_fm, y_fm = as_tensors(get_dataset("fashion_mnist", "test", subset=1000 if CI else None), device=DEVICE)
test_sets = {"mnist": (x_test, y_test), "fmnist": (x_fm, y_fm)}
fig, axes = plt.subplots(2, 2, figsize=(12, 6.4))
for row, ds in enumerate(("mnist", "fmnist")):
    L_ = runs[ds]["learner"]
    torch.manual_seed(1)
    samples = L_.sample(64)
    xs = test_sets[ds][0][:32]
    viz.show_grid(samples, nrow=8, ax=axes[row, 0], title=f"{ds}: prior samples")
    viz.show_grid(torch.cat([xs, L_.reconstruct(xs)]), nrow=8, ax=axes[row, 1],
                  title=f"{ds}: test images (top 4 rows) and reconstructions (bottom 4)")
fig.tight_layout()
plt.show()
mse = {ds: float(metrics.reconstruction_mse(test_sets[ds][0], runs[ds]["learner"].reconstruct(test_sets[ds][0])).mean())
       for ds in ("mnist", "fmnist")}
for ds, v in mse.items():
    glue(f"ch04_{ds}_mse", v, display=False)
print("test reconstruction MSE per pixel ([0, 1] scale):", {k: round(v, 4) for k, v in mse.items()})
''')

md(r"""
## Hierarchical sampling: two readings of Fig. 4

Fig. 4 of the paper shows, for each layer, samples in which "only that layer's code changes". With
a joint prior there are two ways to make such samples, and they are not the same thing:

**(a) Swap** (what the reference code does, `hre:train_hs.py`): draw a batch of joint prior samples;
keep all layers of one sample (a row) and paste in layer $i$ of the others (the columns,
`hierarchy.swap_grid`). Each pasted code is a sample of the **marginal** $p_\alpha(\vz_i)$, but it is
put next to codes it was not sampled with, so the combination may be one the prior finds unlikely.

**(b) Redraw from the conditional**: keep the other layers and sample $\vz_i \sim p_\alpha(\vz_i \mid
\vz_{-i}) \propto \exp(f_\alpha(\vz))\,\N(\vz_i; 0, I)$ by Langevin in $\vz_i$ alone, from $\N(0, I)$
(`hierarchy.resample_grid`, which calls `sampling.langevin` on the layer). This respects the
relations between layers that the joint prior learned; for VLAE (a) and (b) coincide.

Same six rows (contexts) in both readings; first column: the context itself.
""")

code(r'''
N_CTX, N_RES = 6, 8
gen = torch.Generator(DEVICE).manual_seed(5)
state = hierarchy.sample_state(model, N_CTX, gen)
donors = hierarchy.sample_state(model, N_RES, gen)
for reading in ("swap", "redraw"):
    panels = {}
    for i in range(3):
        if reading == "swap":
            x = hierarchy.swap_grid(model, (i,), state=state, donors=donors, include_context=True)
        else:
            x = hierarchy.resample_grid(model, (i,), n_resamples=N_RES, state=state, generator=gen, include_context=True)
        panels[f"$z_{i + 1}$" + (" (bottom)" if i == 0 else " (top)" if i == 2 else "")] = x
    fig = viz.show_panels(panels, nrow=N_RES + 1, panel_width=4.0,
                          suptitle=f"MNIST, reading ({'a' if reading == 'swap' else 'b'}): {reading} one layer")
    for ax in fig.axes:
        ax.axvline(29.5, color=viz.ACCENT_COLOR, linewidth=1.5)
    plt.show()
''')

md(r"""
Measured over many contexts (`hierarchy.resample_stats`, both readings): the share of the pixel
variance that changing one layer causes (relative to redrawing all layers), and how often the
change turns the sample into a **different digit** (the digit classifier of chapters 2-3).
""")

code(r'''
if CI:
    clf = metrics.digit_classifier(cache=None, subset=2000, epochs=1, device=DEVICE)
else:
    clf = metrics.digit_classifier(device=DEVICE)
N_STAT_CTX, N_STAT_RES = (16, 4) if CI else (192, 16)
layers = {f"z_{i + 1}": (i,) for i in range(3)}
rs = []
for reading in ("swap", "resample"):
    st = hierarchy.resample_stats(model, layers, N_STAT_CTX, N_STAT_RES, classifier=clf,
                                  generator=torch.Generator(DEVICE).manual_seed(6), reading=reading)
    for lay in layers:
        rs.append({"reading": "(a) swap" if reading == "swap" else "(b) redraw", "layer": lay,
                   "pixel variance share (%)": 100 * st[lay]["pixel_var_frac"],
                   "digit changes (%)": 100 * st[lay]["class_change"]})
        glue(f"ch04_{reading}_{lay.replace('_', '')}_cls", 100 * st[lay]["class_change"], display=False)
        glue(f"ch04_{reading}_{lay.replace('_', '')}_var", 100 * st[lay]["pixel_var_frac"], display=False)
hs_table = pd.DataFrame(rs).set_index(["reading", "layer"])
display(hs_table.round(1))
''')

md(r"""
On Fashion-MNIST the same two readings (no classifier here; the pixel-variance share only).
""")

code(r'''
fm = runs["fmnist"]["learner"]
gen = torch.Generator(DEVICE).manual_seed(7)
state_f = hierarchy.sample_state(fm, N_CTX, gen)
panels = {f"redraw $z_{i + 1}$": hierarchy.resample_grid(fm, (i,), n_resamples=N_RES, state=state_f, generator=gen,
                                                       include_context=True) for i in range(3)}
fig = viz.show_panels(panels, nrow=N_RES + 1, panel_width=4.0, suptitle="Fashion-MNIST, reading (b)")
plt.show()
st_f = hierarchy.resample_stats(fm, layers, N_STAT_CTX, N_STAT_RES, generator=torch.Generator(DEVICE).manual_seed(8))
display(pd.DataFrame({lay: {"pixel variance share (%)": 100 * st_f[lay]["pixel_var_frac"]} for lay in layers}).T.round(1))
''')

md(r"""
(ch04-table)=
## The latent classifier (Tab. 1)

The protocol (Sec. 5.1 of {cite:t}`cui2023hierarchical`; `jebm_lite.latent_table`): for each trained
model, infer the posterior means of every training and test image, fit the paper's classifier
(Linear $\to$ 256 $\to$ ReLU $\to$ Linear, `metrics.latent_probe`) on **one** layer's training codes,
and report its test accuracy; the baseline is VLAE with the same networks ($f_\alpha \equiv 0$,
preset `<data>_vlae`). A layer from which the class can be read has a high accuracy. The paper's
claim: with the joint prior, accuracy **rises** from the bottom to the top layer (the top layer holds
the class), more clearly than for VLAE.

Each (data, model, seed) is one run and writes one result file; the table below is built from
those files only. To reproduce it (all twelve runs, about an hour and a half on two CPU cores;
finished cells are skipped):

```bash
cd notebooks
python -m jebm_lite.latent_table --profile cpu --seeds 0 1 2 --results results/tab1 --runs runs/tab1
```
""")

code(r'''
if CI:
    # The `ci` profile trains one cell for 30 iterations into a temporary folder: it checks the
    # pipeline (train -> probe -> result file -> table), not the numbers.
    results_dir = jl.io.temp_dir("tab1-ci-")
    latent_table.run_cell("mnist", "joint", 0, results_dir=results_dir, test_subset=1000, probe_epochs=5)
    records = latent_table.load_results(results_dir)
else:
    results_dir = Path("results/tab1")
    records = latent_table.load_results(results_dir, profile=PROFILE)
print(f"{len(records)} result files in {results_dir}")
cells = pd.DataFrame([{"data": r["dataset"], "model": r["method"], "seed": r["seed"],
                       **{f"z_{i + 1} (%)": a for i, a in enumerate(r["accuracy"])},
                       "iterations": r["train_steps"], "train time (min)": (r["train_time_s"] or 0) / 60,
                       "device": r["device"], "commit": r["commit"]} for r in records])
display(cells.round(2))
''')

code(r'''
rows = latent_table.summarise(records)
display(Markdown(latent_table.table_markdown(rows)))
summ = pd.DataFrame(rows)
for r in rows:
    key = f"ch04_tab1_{r['dataset']}_{r['method']}_z{r['layer']}"
    glue(key, r["mean"], display=False)
    glue(key + "_std", r["std"] if np.isfinite(r["std"]) else 0.0, display=False)
    if r["diff"] is not None:
        glue(key + "_diff", r["diff"], display=False)
n_seeds = int(summ["n_seeds"].min())
glue("ch04_tab1_nseeds", n_seeds, display=False)
# Does the mean accuracy rise strictly from z_1 to z_3 (the paper's claim for the joint prior)?
rise = {(ds, me): latent_table.rises_bottom_to_top(rows, ds, me) for ds in ("mnist", "fmnist") for me in ("joint", "vlae")
        if any(r["dataset"] == ds and r["method"] == me for r in rows)}
for (ds, me), v in rise.items():
    glue(f"ch04_rise_{ds}_{me}", "rises" if v else "does not rise", display=False)
for ds in ("mnist", "fmnist"):
    top = {r["method"]: r["mean"] for r in rows if r["dataset"] == ds and r["layer"] == 3}
    if len(top) == 2:
        glue(f"ch04_topgap_{ds}", top["joint"] - top["vlae"], display=False)
print("mean accuracy rises strictly from z_1 to z_3:", {f"{ds} {me}": v for (ds, me), v in rise.items()})
''')

code(r'''
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
for ax, ds in zip(axes, ("mnist", "fmnist")):
    sub = summ[summ["dataset"] == ds]
    for j, (me, color) in enumerate((("vlae", viz.LAYER_COLORS[1]), ("joint", viz.LAYER_COLORS[0]))):
        s = sub[sub["method"] == me].sort_values("layer")
        if s.empty:
            continue
        xs = s["layer"].to_numpy() + (j - 0.5) * 0.35
        ax.bar(xs, s["mean"], width=0.33, yerr=s["std"].fillna(0), color=color, capsize=3,
               label=f"{'joint EBM prior' if me == 'joint' else 'VLAE'} (ours)")
        paper = latent_table.PAPER.get((ds, me))
        if paper:
            ax.scatter(xs, paper, marker="_", s=300, color="black", zorder=3,
                       label="paper" if j == 1 else None)
    ax.set_xticks([1, 2, 3])
    ax.set_xticklabels(["$z_1$ (bottom)", "$z_2$", "$z_3$ (top)"])
    ax.set_ylim(0, 100)
    ax.set_title(f"{'MNIST' if ds == 'mnist' else 'Fashion-MNIST'}: latent-classifier test accuracy")
    ax.legend(fontsize=8, loc="upper left")
axes[0].set_ylabel("% (mean ± std over seeds)")
fig.tight_layout()
plt.show()
''')

md(r"""
### Does longer training move the class to the top?

Our runs are short (3000 iterations, five epochs). The whole table was therefore run a second time
at **three times the training**: every cell (both data sets, both priors, seeds 0, 1, 2) continued
from its 3000-iteration checkpoints to 9000 iterations (the same config with `train.max_steps=9000`;
the trainer resumes, so the first 3000 iterations are the table's own), then probed exactly as above.
Each cell again writes one result file, to `results/tab1_9000/`. When MNIST joint seed 2 diverged, a
fourth MNIST seed (3) of both priors was added, trained from scratch to 9000 iterations (the same
result as training to 3000 and continuing, since resuming is exact), so both MNIST rows have four
trained seeds. The commands (about 25 minutes of training per cell on one CPU thread, plus the probe;
several cells can run side by side, one thread each):

```bash
cd notebooks
mkdir -p runs/tab1_9000
for ds in mnist fmnist; do for m in joint vlae; do for s in 0 1 2; do
  d=runs/tab1_9000/${ds}_${m}_seed${s}-cpu; cp -r runs/tab1/${ds}_${m}_seed${s}-cpu $d; rm $d/result.json
done; done; done
python -m jebm_lite.latent_table --profile cpu --seeds 0 1 2 \
    --runs runs/tab1_9000 --results results/tab1_9000 train.max_steps=9000
python -m jebm_lite.latent_table --profile cpu --datasets mnist --seeds 3 \
    --runs runs/tab1_9000 --results results/tab1_9000 train.max_steps=9000
```

The records below are those files (in the `ci` profile too: reading them costs nothing, and no
9000-iteration training runs in CI).
""")

code(r'''
WORDS = {0: "none", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def records_frame(recs: list[dict]) -> pd.DataFrame:
    """One row per result record: accuracy by layer, length, status (finished / diverged) and commit."""
    return pd.DataFrame([{"data": r["dataset"], "model": r["method"], "seed": r["seed"],
                          **{f"z_{i + 1} (%)": a for i, a in enumerate(r["accuracy"] or [np.nan] * 3)},
                          "iterations": r["train_steps"], "train time (min)": (r["train_time_s"] or 0) / 60,
                          "status": f"diverged at {r['diverged']['step']}" if r.get("diverged") else "finished",
                          "commit": r["commit"]} for r in recs]).round(1)


def glue_table(p: str, all_rows: list[dict], all_records: list[dict], ds: str) -> None:
    """Glue one data set's numbers of a table (summary rows + their records) as ``<p>_...``."""
    rows_ = [r for r in all_rows if r["dataset"] == ds]
    recs = [r for r in all_records if r["dataset"] == ds]
    for r in rows_:
        glue(f"{p}_{r['method']}_z{r['layer']}", r["mean"], display=False)
        glue(f"{p}_{r['method']}_z{r['layer']}_std", r["std"] if np.isfinite(r["std"]) else 0.0, display=False)
    for me in ("joint", "vlae"):
        glue(f"{p}_rise_{me}", "rises" if latent_table.rises_bottom_to_top(rows_, ds, me) else "does not rise",
             display=False)
    glue(f"{p}_nseeds_joint", WORDS.get(next(r["n_seeds"] for r in rows_ if r["method"] == "joint"), "?"),
         display=False)
    glue(f"{p}_maxstd", float(max(r["std"] for r in rows_ if np.isfinite(r["std"]))), display=False)
    m_ = {(r["method"], r["layer"]): r["mean"] for r in rows_}
    glue(f"{p}_joint_z3_gap", float(-next(r["diff"] for r in rows_ if r["method"] == "joint" and r["layer"] == 3)),
         display=False)
    div = [r for r in recs if r.get("diverged")]
    glue(f"{p}_ndiv", WORDS.get(len(div), str(len(div))), display=False)
    glue(f"{p}_div_steps", ", ".join(f"{r['diverged']['step']:,}" for r in div) or "–", display=False)
    joint_recs = [r for r in recs if r["method"] == "joint"]
    glue(f"{p}_ntotal_joint", WORDS.get(len(joint_recs), str(len(joint_recs))), display=False)
    for me in ("joint", "vlae"):
        ok_acc = [r["accuracy"] for r in recs if r["method"] == me and r.get("accuracy")]
        glue(f"{p}_{me}_seed_rise", f"{sum(map(latent_table.strictly_rising, ok_acc))} of {len(ok_acc)}",
             display=False)
        # in how many finished runs is the top layer the most predictive?
        glue(f"{p}_{me}_seed_topbest", f"{sum(int(np.argmax(a)) == 2 for a in ok_acc)} of {len(ok_acc)}",
             display=False)
    glue(f"{p}_joint_gap23", m_[("joint", 3)] - m_[("joint", 2)], display=False)
    glue(f"{p}_topgap", m_[("joint", 3)] - m_[("vlae", 3)], display=False)


def show_table(folder: str, prefix: str) -> tuple[list[dict], list[dict], list[str]]:
    """Load a folder of result files, show its records and summary table, glue each data set as
    ``<prefix>_<ds>_...``. Returns ``(records, summary rows, data sets with both priors)``."""
    recs = latent_table.load_results(folder, profile="cpu")
    rows_ = latent_table.summarise(recs) if recs else []
    datasets = [d for d in ("mnist", "fmnist") if {r["method"] for r in rows_ if r["dataset"] == d} == {"joint", "vlae"}]
    if rows_:
        display(records_frame(recs))
        display(Markdown(latent_table.table_markdown(rows_)))
        for ds in datasets:
            glue_table(f"{prefix}_{ds}", rows_, recs, ds)
    else:
        print(f"no result files in {folder} (see the commands above)")
    return recs, rows_, datasets


longer_records, longer_rows, longer_datasets = show_table("results/tab1_9000", "ch04_longer")
''')

code(r'''
# Per seed: accuracy by layer after 3000 (dashed) and 9000 (solid) iterations, the paper's row in black.
if longer_rows:
    short = {(r["dataset"], r["method"], r["seed"]): r["accuracy"] for r in records if r.get("accuracy")}
    fig, axes = plt.subplots(1, 2 * len(longer_datasets), figsize=(3.2 * 2 * len(longer_datasets), 3.2),
                             sharey=True)
    for ax, (ds, me) in zip(axes, [(ds, me) for ds in longer_datasets for me in ("joint", "vlae")]):
        color = viz.LAYER_COLORS[0] if me == "joint" else viz.LAYER_COLORS[1]
        for r in longer_records:
            if r["dataset"] != ds or r["method"] != me:
                continue
            if (ds, me, r["seed"]) in short:
                ax.plot([1, 2, 3], short[(ds, me, r["seed"])], "--", color=color, alpha=0.4, lw=1)
            if r.get("accuracy"):
                ax.plot([1, 2, 3], r["accuracy"], "-o", color=color, ms=3, lw=1.5)
        paper = latent_table.PAPER.get((ds, me))
        if paper:
            ax.plot([1, 2, 3], paper, "_", color="black", ms=18, mew=2)
        ax.set_xticks([1, 2, 3])
        ax.set_xticklabels(["$z_1$", "$z_2$", "$z_3$"])
        ax.set_title(f"{'MNIST' if ds == 'mnist' else 'F-MNIST'}, {'joint prior' if me == 'joint' else 'VLAE'}",
                     fontsize=10)
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle("one line per seed: 3000 iterations dashed, 9000 solid; paper: black bars", fontsize=9)
    fig.tight_layout()
    plt.show()
''')

md(r"""
### Which layer gets the class? Four probes

On Fashion-MNIST the paper's VLAE already puts the class in the top layer (83.2 %), so whatever keeps
ours in the bottom layer is shared by both priors: the generator, the inference network or the
likelihood, not the EBM. Four candidates were probed, each with seed 0 of both Fashion-MNIST cells
trained again for 3000 iterations with one setting changed and probed as above (one seed each: a probe,
not a table):

* **A tighter likelihood.** VLAE's reconstruction term is $8\cdot 784\cdot$ mean $|x - \hat x|$ (an L1
  loss, report §3.1); ours is Gaussian with $\sigma = 0.3$, which charges a pixel error of 0.1 only
  $0.1^2 / (2\cdot 0.3^2) \approx 0.06$ nats, against 0.8 under VLAE's loss. A loose likelihood makes
  every nat of code expensive, and the model could keep its nats where they buy the most
  reconstruction, in the bottom layer's short path to the pixels. The probe: $\sigma = 0.1$ (an error
  of 0.1 now costs 0.5 nats).
* **VLAE-small's own widths.** Our `mnist_small` preset thins VLAE-small's bottom convs (64, 128 → 16,
  32) and its fully connected width (1024 → 400) so that it trains on a laptop CPU. The probe restores
  the original widths (about three times the CPU time per iteration).
* **VLAE's KL warm-up.** VLAE trains with the prior term weighted by $1 - e^{-t/2000}$ (report §3.1), so
  early on all layers encode freely; the paper's joint model trains without it. The probe:
  `model.kl_warmup=1000` (`objectives.kl_warmup_weight`: the time constant halved for our 3000-iteration
  budget, the weight reaches 0.95 at the end; it scales $\sum_i \mathrm{KL}_i - f_\alpha$ in the
  loss of Eqs. 11-12).
* **VLAE's normalisation.** VLAE puts BatchNorm after every hidden layer (report §3.1); our networks
  have none. BatchNorm itself is out: in train mode it couples the images of a batch, so one Langevin
  chain's gradient would depend on the other chains, and fixing all layers but one (hierarchical
  sampling) would no longer fix the image. The probe puts a **per-sample** normalisation at the same
  places instead, `model.norm=layer`: LayerNorm after every hidden Linear, GroupNorm with one group
  (a layer norm over channels and pixels) after every hidden convolution, in both networks
  (`jebm_lite.models.hierarchical`). Like BatchNorm it makes each hidden layer's output independent
  of the scale of its weights, which keeps the long fully connected paths to the upper layers
  trainable; unlike it, every image is normalised on its own.

```bash
python -m jebm_lite.latent_table --profile cpu --datasets fmnist --seeds 0 \
    --runs runs/sigma01 --results results/sigma01 model.sigma=0.1
python -m jebm_lite.latent_table --profile cpu --datasets fmnist --seeds 0 \
    --runs runs/wide --results results/wide model.channels=64,128 model.hidden=1024
python -m jebm_lite.latent_table --profile cpu --datasets fmnist --seeds 0 \
    --runs runs/klwarm --results results/klwarm model.kl_warmup=1000
# the warm-up cells continued to 9000 iterations
mkdir -p runs/klwarm_9000; cp -r runs/klwarm/fmnist_*_seed0-cpu runs/klwarm_9000/; rm runs/klwarm_9000/*/result.json
python -m jebm_lite.latent_table --profile cpu --datasets fmnist --seeds 0 \
    --runs runs/klwarm_9000 --results results/klwarm_9000 model.kl_warmup=1000 train.max_steps=9000
python -m jebm_lite.latent_table --profile cpu --datasets fmnist --seeds 0 \
    --runs runs/layernorm --results results/layernorm model.norm=layer
```
""")

code(r'''
PROBES = {"sigma01": "sigma = 0.1", "wide": "widths 64, 128 / 1024", "klwarm": "KL warm-up 1000",
          "klwarm_9000": "KL warm-up 1000, continued", "layernorm": "per-sample LayerNorm"}
LAYER_NAMES = ("the bottom layer", "the middle layer", "the top layer")
# the probes are Fashion-MNIST seed 0 (results/layernorm also holds the full table of the next section)
probe_records = {k: [r for r in latent_table.load_results(f"results/{k}", profile="cpu")
                     if r["dataset"] == "fmnist" and r["seed"] == 0] for k in PROBES}
if not CI and any(probe_records.values()):
    base = {(r["dataset"], r["method"], r["seed"]): r for r in records}
    probe_rows = []
    for method in ("joint", "vlae"):
        changed = [(k, r) for k, recs in probe_records.items() for r in recs if r["method"] == method]
        if not changed:
            continue
        ref = base[("fmnist", method, 0)]
        for label, rec in [("the table's setting", ref)] + [(PROBES[k], r) for k, r in changed]:
            probe_rows.append({"model": method, "setting": label,
                               **{f"z_{i + 1} (%)": a for i, a in enumerate(rec["accuracy"] or [np.nan] * 3)},
                               "iterations": rec["train_steps"], "train time (min)": (rec["train_time_s"] or 0) / 60,
                               "commit": rec["commit"]})
        for k, r in [("base", ref)] + changed:
            for i, a in enumerate(r["accuracy"] or []):
                glue(f"ch04_probe_{k}_{method}_z{i + 1}", a, display=False)
            if r.get("accuracy"):
                glue(f"ch04_probe_{k}_{method}_best", LAYER_NAMES[int(np.argmax(r["accuracy"]))], display=False)
    display(pd.DataFrame(probe_rows).round(1))
    # the other probes' runs at 3000 iterations (not the normalisation probe): where is the class?
    probe_acc = [r["accuracy"] for k, recs in probe_records.items() for r in recs
                 if r.get("accuracy") and r["train_steps"] == 3000 and k != "layernorm"]
    glue("ch04_probe_n", WORDS.get(len(probe_acc), str(len(probe_acc))), display=False)
    glue("ch04_probe_nbottom", WORDS.get(sum(int(np.argmax(a)) == 0 for a in probe_acc), "?"), display=False)
elif not any(probe_records.values()):
    print("no probe result files here (see the commands above)")
''')

md(r"""
**Three of the four probes do not move the class to the top layer.** With $\sigma = 0.1$ the joint prior's layers
read {glue:text}`ch04_probe_sigma01_joint_z1:.1f`, {glue:text}`ch04_probe_sigma01_joint_z2:.1f` and
{glue:text}`ch04_probe_sigma01_joint_z3:.1f` % (VLAE {glue:text}`ch04_probe_sigma01_vlae_z1:.1f`,
{glue:text}`ch04_probe_sigma01_vlae_z2:.1f`, {glue:text}`ch04_probe_sigma01_vlae_z3:.1f` %); with
VLAE-small's widths {glue:text}`ch04_probe_wide_joint_z1:.1f`, {glue:text}`ch04_probe_wide_joint_z2:.1f`
and {glue:text}`ch04_probe_wide_joint_z3:.1f` % (VLAE {glue:text}`ch04_probe_wide_vlae_z1:.1f`,
{glue:text}`ch04_probe_wide_vlae_z2:.1f`, {glue:text}`ch04_probe_wide_vlae_z3:.1f` %); with the KL
warm-up {glue:text}`ch04_probe_klwarm_joint_z1:.1f`, {glue:text}`ch04_probe_klwarm_joint_z2:.1f` and
{glue:text}`ch04_probe_klwarm_joint_z3:.1f` % (VLAE {glue:text}`ch04_probe_klwarm_vlae_z1:.1f`,
{glue:text}`ch04_probe_klwarm_vlae_z2:.1f`, {glue:text}`ch04_probe_klwarm_vlae_z3:.1f` %). The warm-up
changes VLAE's codes (its bottom layer falls from {glue:text}`ch04_probe_base_vlae_z1:.1f` to
{glue:text}`ch04_probe_klwarm_vlae_z1:.1f` % and {glue:text}`ch04_probe_klwarm_vlae_best` becomes the
most predictive) but not the joint prior's, and continued to 9000 iterations it moves neither to the
top (joint {glue:text}`ch04_probe_klwarm_9000_joint_z1:.1f`,
{glue:text}`ch04_probe_klwarm_9000_joint_z2:.1f`, {glue:text}`ch04_probe_klwarm_9000_joint_z3:.1f` %;
VLAE {glue:text}`ch04_probe_klwarm_9000_vlae_z1:.1f`, {glue:text}`ch04_probe_klwarm_9000_vlae_z2:.1f`,
{glue:text}`ch04_probe_klwarm_9000_vlae_z3:.1f` %, best: {glue:text}`ch04_probe_klwarm_9000_vlae_best`).

**Per-sample normalisation does.** With `model.norm=layer` the joint prior's layers read
{glue:text}`ch04_probe_layernorm_joint_z1:.1f`, {glue:text}`ch04_probe_layernorm_joint_z2:.1f` and
{glue:text}`ch04_probe_layernorm_joint_z3:.1f` % (VLAE {glue:text}`ch04_probe_layernorm_vlae_z1:.1f`,
{glue:text}`ch04_probe_layernorm_vlae_z2:.1f`, {glue:text}`ch04_probe_layernorm_vlae_z3:.1f` %): for both
priors {glue:text}`ch04_probe_layernorm_joint_best` (joint) and {glue:text}`ch04_probe_layernorm_vlae_best`
(VLAE) is now the most predictive, after the same 3000 iterations; in
{glue:text}`ch04_probe_nbottom` of the other {glue:text}`ch04_probe_n` probe runs at 3000 iterations it was
the bottom one. So the bottom-heavy Fashion-MNIST codes are not an artefact of our loose likelihood, of the
thinned networks or of a missing warm-up, but of the missing normalisation: without it the long fully
connected path to the top layer learns slowly, and the bottom layer, two convolutions from the pixels,
takes the class first. One seed is a probe, not a result, so the next section runs the whole table
with it.
""")

md(r"""
### The table again, with per-sample normalisation

The fourth probe is the one that moves the class, so the whole table was run again with it: both data
sets, both priors, seeds 0, 1, 2, 3000 iterations each, everything else as in the table above
(`model.norm=layer`; each cell writes one result file to `results/layernorm/`, about six minutes of
training per cell on one CPU thread):

```bash
python -m jebm_lite.latent_table --profile cpu --seeds 0 1 2 \
    --runs runs/layernorm --results results/layernorm model.norm=layer
# then every cell continued to 9000 iterations, as for the table without normalisation
mkdir -p runs/layernorm_9000; cp -r runs/layernorm/*_seed[012]-cpu runs/layernorm_9000/
rm runs/layernorm_9000/*/result.json
python -m jebm_lite.latent_table --profile cpu --seeds 0 1 2 --runs runs/layernorm_9000 \
    --results results/layernorm_9000 model.norm=layer train.max_steps=9000
```
""")

code(r'''
ln_records, ln_rows, ln_datasets = show_table("results/layernorm", "ch04_ln")
# mean top-layer accuracy with and without the normalisation, per (data, prior)
plain_top = {(q["dataset"], q["method"]): q["mean"] for q in rows if q["layer"] == 3}  # the table above
for r in ln_rows:
    if r["layer"] == 3 and (r["dataset"], r["method"]) in plain_top:
        glue(f"ch04_ln_{r['dataset']}_{r['method']}_z3_gain", r["mean"] - plain_top[(r["dataset"], r["method"])],
             display=False)
''')

code(r'''
# The normalised cells continued to 9000 iterations (if their result files are here).
ln9_records, ln9_rows, ln9_datasets = show_table("results/layernorm_9000", "ch04_ln9")
''')

code(r'''
# Mean accuracy by layer (± std over seeds), one panel per (prior, data): without normalisation (grey,
# 3000 iterations), with it at 3000 (colour) and 9000 iterations (dark), the paper's row (black crosses).
if ln_rows:
    fig, axes = plt.subplots(2, len(ln_datasets), figsize=(5.2 * len(ln_datasets), 6.4), sharey=True,
                             sharex=True, squeeze=False)
    for row, (me, color) in enumerate((("joint", viz.LAYER_COLORS[0]), ("vlae", viz.LAYER_COLORS[1]))):
        for ax, ds in zip(axes[row], ln_datasets):
            series = [(rows, "--o", "0.6", "no normalisation, 3000 it."),
                      (ln_rows, "-o", color, "LayerNorm, 3000 it."),
                      (ln9_rows, "-s", "black", "LayerNorm, 9000 it.")]
            for src, style, c, label in series:
                s_ = sorted([r for r in src if r["dataset"] == ds and r["method"] == me], key=lambda r: r["layer"])
                if s_:
                    ax.errorbar([r["layer"] for r in s_], [r["mean"] for r in s_],
                                yerr=[r["std"] if np.isfinite(r["std"]) else 0 for r in s_], fmt=style, ms=4,
                                color=c, capsize=3, label=label, alpha=0.8)
            paper = latent_table.PAPER.get((ds, me))
            if paper:
                ax.plot([1, 2, 3], paper, "x", color="black", ms=10, mew=2, label="paper")
            ax.set_xticks([1, 2, 3])
            ax.set_xticklabels(["$z_1$ (bottom)", "$z_2$", "$z_3$ (top)"])
            ax.set_ylim(0, 100)
            ax.set_title(f"{'MNIST' if ds == 'mnist' else 'Fashion-MNIST'}, "
                         f"{'joint EBM prior' if me == 'joint' else 'VLAE'}", fontsize=10)
    axes[0][0].legend(fontsize=7, loc="upper left")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy (%)")
    fig.tight_layout()
    plt.show()
''')

md(r"""
**With per-sample normalisation the class moves to the top layer.** On MNIST the joint prior's mean
accuracy {glue:text}`ch04_ln_mnist_rise_joint` strictly from the bottom to the top layer
({glue:text}`ch04_ln_mnist_joint_z1:.1f` ± {glue:text}`ch04_ln_mnist_joint_z1_std:.1f`,
{glue:text}`ch04_ln_mnist_joint_z2:.1f` ± {glue:text}`ch04_ln_mnist_joint_z2_std:.1f` and
{glue:text}`ch04_ln_mnist_joint_z3:.1f` ± {glue:text}`ch04_ln_mnist_joint_z3_std:.1f` %; paper 32.6 /
58.3 / 67.6 %), and per seed it rises strictly in {glue:text}`ch04_ln_mnist_joint_seed_rise` runs. VLAE's
{glue:text}`ch04_ln_mnist_rise_vlae` ({glue:text}`ch04_ln_mnist_vlae_z1:.1f`,
{glue:text}`ch04_ln_mnist_vlae_z2:.1f`, {glue:text}`ch04_ln_mnist_vlae_z3:.1f` %; strictly rising in
{glue:text}`ch04_ln_mnist_vlae_seed_rise` seeds). That is the ordering the paper reports for the joint prior,
after the same 3000 iterations that without normalisation left the class in the middle layer. What it
does not show is the paper's margin: the joint prior's top layer is not more predictive than VLAE's
(joint minus VLAE: {glue:text}`ch04_ln_mnist_topgap:+.1f` points; paper +15.6), and it is
{glue:text}`ch04_ln_mnist_joint_z3_gap:.1f` points below the paper's 67.6 %.

On Fashion-MNIST the top layer is now the most predictive one in {glue:text}`ch04_ln_fmnist_joint_seed_topbest`
joint seeds ({glue:text}`ch04_ln_fmnist_vlae_seed_topbest` VLAE seeds), against the bottom layer without
normalisation, and the joint prior's top layer is {glue:text}`ch04_ln_fmnist_topgap:+.1f` points above
VLAE's (paper +1.0). Its mean accuracy {glue:text}`ch04_ln_fmnist_rise_joint` strictly, though
({glue:text}`ch04_ln_fmnist_joint_z1:.1f`, {glue:text}`ch04_ln_fmnist_joint_z2:.1f`,
{glue:text}`ch04_ln_fmnist_joint_z3:.1f` %; paper 39.3 / 44.8 / 84.3 %): the middle layer is the least
predictive, the pattern of the paper's VLAE row (52.4 / 35.7 / 83.2 %), not of its joint row. The top layer
gained {glue:text}`ch04_ln_fmnist_joint_z3_gain:+.1f` points (joint) and
{glue:text}`ch04_ln_fmnist_vlae_z3_gain:+.1f` (VLAE) over the table without normalisation, and is still
{glue:text}`ch04_ln_fmnist_joint_z3_gap:.1f` points below the paper's.

**Continued to 9000 iterations** (the second table above), the normalised models keep this ordering on
MNIST: the joint prior reads {glue:text}`ch04_ln9_mnist_joint_z1:.1f` ± {glue:text}`ch04_ln9_mnist_joint_z1_std:.1f`,
{glue:text}`ch04_ln9_mnist_joint_z2:.1f` ± {glue:text}`ch04_ln9_mnist_joint_z2_std:.1f` and
{glue:text}`ch04_ln9_mnist_joint_z3:.1f` ± {glue:text}`ch04_ln9_mnist_joint_z3_std:.1f` % (paper 32.6 / 58.3 /
67.6 %), strictly rising in {glue:text}`ch04_ln9_mnist_joint_seed_rise` seeds, its top layer
{glue:text}`ch04_ln9_mnist_joint_z3_gap:.1f` points below the paper's. But with the longer training VLAE's
mean {glue:text}`ch04_ln9_mnist_rise_vlae` too ({glue:text}`ch04_ln9_mnist_vlae_z1:.1f`,
{glue:text}`ch04_ln9_mnist_vlae_z2:.1f`, {glue:text}`ch04_ln9_mnist_vlae_z3:.1f` %; strictly in
{glue:text}`ch04_ln9_mnist_vlae_seed_rise` seeds), and its top layer is as predictive as the joint prior's
(joint minus VLAE: {glue:text}`ch04_ln9_mnist_topgap:+.1f` points, within VLAE's spread over seeds of
± {glue:text}`ch04_ln9_mnist_vlae_z3_std:.1f`; paper +15.6). Where the two priors differ is the middle
layer, {glue:text}`ch04_ln9_mnist_joint_z2:.1f` % for the joint prior against
{glue:text}`ch04_ln9_mnist_vlae_z2:.1f` % for VLAE (the paper has 58.3 and 57.9 %). On Fashion-MNIST the
joint prior's mean {glue:text}`ch04_ln9_fmnist_rise_joint` strictly
({glue:text}`ch04_ln9_fmnist_joint_z1:.1f`, {glue:text}`ch04_ln9_fmnist_joint_z2:.1f`,
{glue:text}`ch04_ln9_fmnist_joint_z3:.1f` %; strictly rising in {glue:text}`ch04_ln9_fmnist_joint_seed_rise`
seeds, the top layer the most predictive in {glue:text}`ch04_ln9_fmnist_joint_seed_topbest`), VLAE's
{glue:text}`ch04_ln9_fmnist_rise_vlae` ({glue:text}`ch04_ln9_fmnist_vlae_z1:.1f`,
{glue:text}`ch04_ln9_fmnist_vlae_z2:.1f`, {glue:text}`ch04_ln9_fmnist_vlae_z3:.1f` %), and the joint
prior's top layer is {glue:text}`ch04_ln9_fmnist_joint_z3_gap:.1f` points below the paper's 84.3 %.
No normalised run diverged ({glue:text}`ch04_ln9_mnist_ndiv` on MNIST, {glue:text}`ch04_ln9_fmnist_ndiv`
on Fashion-MNIST).

So with per-sample normalisation the first half of the paper's Tab. 1 claim, the joint prior's accuracy
rising from the bottom to the top layer, holds on MNIST, in every seed and at both lengths; on
Fashion-MNIST the top layer holds the most class information but the middle layer dips below the
bottom one in the mean. The second half, the joint prior's top layer beating VLAE's, is not seen on
MNIST at either length; on Fashion-MNIST the joint prior's top layer is ahead by
{glue:text}`ch04_ln9_fmnist_topgap:+.1f` points at 9000 iterations, well within its spread over seeds
(± {glue:text}`ch04_ln9_fmnist_joint_z3_std:.1f`; paper +1.0). And the joint prior's top layers stay below the paper's, by
{glue:text}`ch04_ln9_mnist_joint_z3_gap:.1f` points on MNIST and {glue:text}`ch04_ln9_fmnist_joint_z3_gap:.1f`
on Fashion-MNIST, with a budget far below the paper's.
""")

code(r'''
# Checks that hold in every profile: finite training curves, a result record per cell with one rate per
# layer, a table row per (data, model, layer).
for ds in runs:
    rows_ = [h for h in runs[ds]["history"] if "event" not in h]
    for key in ("loss", "mse", "e_loss", "energy/post", "energy/prior"):
        assert np.isfinite([h[key] for h in rows_]).all(), (ds, key)
assert trace.chain.isfinite().all() and torch.isfinite(loss)
assert all(len(r["accuracy"]) == 3 and all(0 <= a <= 100 for a in r["accuracy"]) for r in records)
assert len(rows) == 3 * len({(r["dataset"], r["method"]) for r in records})
if not CI:
    # the stored run: all four cells of both data sets, three seeds each (whether the paper's claim holds
    # is reported in the text below, not asserted: it is a measurement, not a property of the code)
    assert n_seeds >= 3 and len(rise) == 4, (n_seeds, rise)
# the stored 9000-iteration records: both data sets, both priors, at least three finished seeds per row
assert {(r["dataset"], r["method"]) for r in longer_rows} == {(d, m) for d in ("mnist", "fmnist") for m in ("joint", "vlae")}
assert all(r["n_seeds"] >= 3 for r in longer_rows), [(r["dataset"], r["method"], r["n_seeds"]) for r in longer_rows]
# the stored per-sample-normalisation table: the same coverage
assert {(r["dataset"], r["method"]) for r in ln_rows} == {(d, m) for d in ("mnist", "fmnist") for m in ("joint", "vlae")}
assert all(r["n_seeds"] >= 3 for r in ln_rows), [(r["dataset"], r["method"], r["n_seeds"]) for r in ln_rows]
assert all(r["config"]["model"]["norm"] == "layer" for r in ln_records + ln9_records)
assert ln9_datasets == ["mnist", "fmnist"] and all(r["n_seeds"] >= 3 for r in ln9_rows)
print(f"checks passed (profile {PROFILE})")
''')

md(r"""
## What our runs show

*(Numbers from the stored `cpu` run: {glue:text}`ch04_tab1_nseeds` seeds per cell,
{glue:text}`ch04_mnist_steps` iterations per model.)*

**Does the top layer hold the class?** The paper's claim is that with the joint prior the accuracy
rises from the bottom to the top layer. In our runs the mean accuracy of the joint prior
{glue:text}`ch04_rise_mnist_joint` strictly from $\vz_1$ to $\vz_3$ on MNIST and
{glue:text}`ch04_rise_fmnist_joint` on Fashion-MNIST (VLAE: {glue:text}`ch04_rise_mnist_vlae` on
MNIST, {glue:text}`ch04_rise_fmnist_vlae` on Fashion-MNIST). The top layer of the joint prior is
{glue:text}`ch04_topgap_mnist:+.1f` points more predictive than VLAE's on MNIST and
{glue:text}`ch04_topgap_fmnist:+.1f` on Fashion-MNIST (a negative number: less predictive; in the
paper +15.6 and +1.0 points). The details:

**Tab. 1, MNIST.** With the joint prior the latent classifier reads the digit from $\vz_1$, $\vz_2$,
$\vz_3$ with {glue:text}`ch04_tab1_mnist_joint_z1:.1f` ± {glue:text}`ch04_tab1_mnist_joint_z1_std:.1f`,
{glue:text}`ch04_tab1_mnist_joint_z2:.1f` ± {glue:text}`ch04_tab1_mnist_joint_z2_std:.1f` and
{glue:text}`ch04_tab1_mnist_joint_z3:.1f` ± {glue:text}`ch04_tab1_mnist_joint_z3_std:.1f` % accuracy
(paper: 32.6 / 58.3 / 67.6 %; our difference {glue:text}`ch04_tab1_mnist_joint_z1_diff:+.1f`,
{glue:text}`ch04_tab1_mnist_joint_z2_diff:+.1f`, {glue:text}`ch04_tab1_mnist_joint_z3_diff:+.1f`
points). VLAE with the same networks: {glue:text}`ch04_tab1_mnist_vlae_z1:.1f`,
{glue:text}`ch04_tab1_mnist_vlae_z2:.1f`, {glue:text}`ch04_tab1_mnist_vlae_z3:.1f` % (paper 35.7 /
57.9 / 52.1 %; difference {glue:text}`ch04_tab1_mnist_vlae_z1_diff:+.1f`,
{glue:text}`ch04_tab1_mnist_vlae_z2_diff:+.1f`, {glue:text}`ch04_tab1_mnist_vlae_z3_diff:+.1f`).

**Tab. 1, Fashion-MNIST.** Joint prior {glue:text}`ch04_tab1_fmnist_joint_z1:.1f`,
{glue:text}`ch04_tab1_fmnist_joint_z2:.1f`, {glue:text}`ch04_tab1_fmnist_joint_z3:.1f` % (paper 39.3 /
44.8 / 84.3 %); VLAE {glue:text}`ch04_tab1_fmnist_vlae_z1:.1f`, {glue:text}`ch04_tab1_fmnist_vlae_z2:.1f`,
{glue:text}`ch04_tab1_fmnist_vlae_z3:.1f` % (paper 52.4 / 35.7 / 83.2 %).

**Hierarchical sampling.** Redrawing one layer from its conditional (reading (b)) changes the digit
in {glue:text}`ch04_resample_z1_cls:.0f` % ($\vz_1$), {glue:text}`ch04_resample_z2_cls:.0f` % ($\vz_2$)
and {glue:text}`ch04_resample_z3_cls:.0f` % ($\vz_3$) of the cases; swapping codes between samples
(reading (a)) in {glue:text}`ch04_swap_z1_cls:.0f` %, {glue:text}`ch04_swap_z2_cls:.0f` % and
{glue:text}`ch04_swap_z3_cls:.0f` %.

**So, at this budget and without normalisation, Tab. 1 is not reproduced.** In our stored run the most predictive layer is the
middle one on MNIST and the bottom one on Fashion-MNIST, for both priors, and the joint prior's
accuracies lie within the spread over seeds of VLAE's: our joint EBM prior does not move the class
to the top layer. The toy of chapter 5, with three digits, does put the class in the top layer (for
both priors, through the gated merge); with ten classes in 2-D codes the class is spread over the
three layers.

**With three times the training** (the 9000-iteration table above) the picture changes for the joint
prior: its mean accuracy {glue:text}`ch04_longer_mnist_rise_joint` from the bottom to the top layer
({glue:text}`ch04_longer_mnist_joint_z1:.1f`, {glue:text}`ch04_longer_mnist_joint_z2:.1f` and
{glue:text}`ch04_longer_mnist_joint_z3:.1f` %), while VLAE's {glue:text}`ch04_longer_mnist_rise_vlae`
({glue:text}`ch04_longer_mnist_vlae_z1:.1f`, {glue:text}`ch04_longer_mnist_vlae_z2:.1f`,
{glue:text}`ch04_longer_mnist_vlae_z3:.1f` %, its middle layer as predictive as its top one). That is the
direction of the paper's MNIST row (joint rising to 67.6 %, VLAE peaking in the middle at 57.9 %).
It is **not** an established reproduction. Of the {glue:text}`ch04_longer_mnist_ntotal_joint` joint seeds,
{glue:text}`ch04_longer_mnist_ndiv` diverged (at iteration
{glue:text}`ch04_longer_mnist_div_steps`: the energies exploded and three roll-backs with halved learning
rates did not save it; the run is recorded as diverged, not dropped), so the joint row has
{glue:text}`ch04_longer_mnist_nseeds_joint` seeds. Per seed, the accuracy rises strictly from layer to layer
in {glue:text}`ch04_longer_mnist_joint_seed_rise` finished joint runs, and the mean rise from $\vz_2$ to $\vz_3$
({glue:text}`ch04_longer_mnist_joint_gap23:.1f` points) is about one standard deviation over seeds (which
reach {glue:text}`ch04_longer_mnist_maxstd:.1f` points). The joint prior's top layer is no more predictive than
VLAE's (joint minus VLAE: {glue:text}`ch04_longer_mnist_topgap:+.1f` points; in the paper +15.6) and is still
{glue:text}`ch04_longer_mnist_joint_z3_gap:.1f` points below the paper's. Longer training moves the class up
under both priors; these runs do not show the joint prior putting it higher than VLAE does.

**On Fashion-MNIST, three times the training does not move the class up.** The joint prior's mean
accuracy {glue:text}`ch04_longer_fmnist_rise_joint` from the bottom to the top layer
({glue:text}`ch04_longer_fmnist_joint_z1:.1f`, {glue:text}`ch04_longer_fmnist_joint_z2:.1f` and
{glue:text}`ch04_longer_fmnist_joint_z3:.1f` %; strictly rising in
{glue:text}`ch04_longer_fmnist_joint_seed_rise` seeds), and VLAE's
{glue:text}`ch04_longer_fmnist_rise_vlae` ({glue:text}`ch04_longer_fmnist_vlae_z1:.1f`,
{glue:text}`ch04_longer_fmnist_vlae_z2:.1f`, {glue:text}`ch04_longer_fmnist_vlae_z3:.1f` %). Under both
priors the bottom layer stays the most predictive, as at 3000 iterations, and the joint prior's top
layer is {glue:text}`ch04_longer_fmnist_joint_z3_gap:.1f` points below the paper's 84.3 % (joint minus
VLAE at the top: {glue:text}`ch04_longer_fmnist_topgap:+.1f` points; in the paper +1.0).
(Fashion-MNIST joint runs that diverged: {glue:text}`ch04_longer_fmnist_ndiv` of
{glue:text}`ch04_longer_fmnist_ntotal_joint`.) So the paper's Tab. 1 claim (the joint prior's accuracy rising from the bottom to the
top layer, its top layer beating VLAE's) holds on MNIST at 9000 iterations only in its first half and
only within the spread over seeds, and on Fashion-MNIST in neither half. Whether that changes with the
paper's budget, more seeds and a stable EBM learning rate (the `full` profile, 30,000 iterations on a
GPU) is left open here. The probes above find one cause on our side: the missing normalisation
(with it, the next paragraph).

**With per-sample normalisation** (`model.norm=layer`, the table in the previous section) the
picture moves towards the paper's, at the same 3000 iterations: on MNIST the joint prior's mean accuracy
{glue:text}`ch04_ln_mnist_rise_joint` from the bottom to the top layer
({glue:text}`ch04_ln_mnist_joint_z1:.1f`, {glue:text}`ch04_ln_mnist_joint_z2:.1f`,
{glue:text}`ch04_ln_mnist_joint_z3:.1f` %; strictly in {glue:text}`ch04_ln_mnist_joint_seed_rise` seeds)
while VLAE's {glue:text}`ch04_ln_mnist_rise_vlae`, and on Fashion-MNIST the top layer becomes the most
predictive one for both priors. The paper's second half, the joint prior's top layer beating VLAE's by a
wide margin on MNIST, is still not seen ({glue:text}`ch04_ln_mnist_topgap:+.1f` points), and every top
layer stays well below the paper's. Continued to 9000 iterations the MNIST ordering holds
(joint {glue:text}`ch04_ln9_mnist_joint_z1:.1f`, {glue:text}`ch04_ln9_mnist_joint_z2:.1f`,
{glue:text}`ch04_ln9_mnist_joint_z3:.1f` %, strictly rising in {glue:text}`ch04_ln9_mnist_joint_seed_rise`
seeds), but VLAE's accuracy then {glue:text}`ch04_ln9_mnist_rise_vlae` as well and reaches the same top-layer
accuracy.

**Why our numbers differ from the paper's.** Our budget is small: {glue:text}`ch04_mnist_steps`
iterations of batch 100 (about five epochs) on CPU, where the paper trains far longer on a GPU; the
MNIST architecture is not published and ours is an inference (VLAE-small with the gated merge, 3.2 M
parameters like the paper's, and without VLAE's batch norm, which the probes show matters; the
per-sample LayerNorm that replaces it is our choice, not the paper's); the EBM learning rate is ten
times the SVHN reference's (see chapter 5). The per-seed spread in the table is the honest error bar of
our protocol; the paper reports no spread for Tab. 1.

## Summary

- The joint prior is one EBM on the concatenated codes of all layers (Eq. 3,
  `JointEBMPrior.log_prob_unnorm`), on top of a VLAE-style generator (Eq. 5) and ladder inference
  network (Eq. 8).
- Generator and inference network minimise reconstruction + per-layer KL $- f_\alpha$ (Eqs. 11-12,
  `objectives.joint_inference_loss`); the EBM contrasts inferred codes with 60-step prior Langevin
  samples (Eqs. 10, 13, 14, `objectives.ebm_loss`, `sampling.sample_prior`).
- Hierarchical sampling has two readings: swap a layer's codes between joint samples
  (`hierarchy.swap_grid`) or redraw the layer from its conditional (`hierarchy.resample_grid`).
- Tab. 1 is rebuilt from result files of three seeds per cell (`jebm_lite.latent_table`), at 3000 and
  at 9000 iterations. Without normalisation the joint prior's mean accuracy rises from bottom to top on
  MNIST only at 9000 iterations (within the spread over seeds), not on Fashion-MNIST, where the bottom
  layer keeps the class.
- Four probes find why: without VLAE's normalisation the long path to the top layer learns slowly.
  With a per-sample LayerNorm at VLAE's BatchNorm positions (`model.norm=layer`) the joint prior's
  accuracy rises strictly from bottom to top on MNIST in every seed, at 3000 and at 9000 iterations,
  and on Fashion-MNIST the top layer becomes the most predictive (the middle one dips). The paper's
  margin over VLAE at the top is not reproduced (at 9000 iterations VLAE's accuracy rises on MNIST too,
  to the same top layer), nor its absolute top-layer accuracies: Tab. 1 is reproduced in its ordering
  on MNIST, not in its numbers.

## Exercises

1. Why is reading (a) not a sample from the joint prior, while reading (b) is one (up to the
   short-run approximation)?

   :::{admonition} Solution
   :class: dropdown

   In (a) the pasted code $\vz_i'$ comes from another joint sample, so $(\vz_i', \vz_{-i})$ is
   distributed as $p_\alpha(\vz_i)\,p_\alpha(\vz_{-i})$, the product of the marginals. It equals the
   joint only when the layers are independent, which is what the EBM is there to break. In (b)
   $\vz_i \sim p_\alpha(\vz_i \mid \vz_{-i})$ and $\vz_{-i} \sim p_\alpha(\vz_{-i})$, so the pair is a
   joint sample: one step of a Gibbs sampler.
   :::

2. The EBM loss of Eq. 10 is `mean f(z-) - mean f(z+)`. What happens to it if $f_\alpha$ is shifted
   by a constant, and why does the training diagnostic plot the **difference** of the two energies?

   :::{admonition} Solution
   :class: dropdown

   Nothing: the constant cancels in the difference, and it is absorbed by $Z(\alpha)$ in the density.
   So the level of either curve means nothing; only their gap does (zero when prior samples and
   inferred codes have the same mean energy).
   :::
""")

code(r'''
card.finish()
glue("ch04_wall_min", card.wall_time_s / 60, display=False)
''')

nb.write("notebooks/04_joint_prior.ipynb")
