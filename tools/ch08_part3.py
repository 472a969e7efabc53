"""Chapter 8, part 3 (disentanglement, paper Tab. 8): cells appended by tools/make_ch08.py."""

from __future__ import annotations


def add_part3(md, code) -> None:
    md(r"""
(ch08-disentangle)=
## Part 3: Disentanglement (paper Tab. 8)

The paper's appendix trains the joint prior on 3D Shapes {cite:p}`burgess2018shapes3d` (three layers,
pro-VLAE's networks and latent sizes) and reports the **MIG** {cite:p}`chen2018isolating` and
**MIG-sup** {cite:p}`li2020provlae` of its codes: 0.554 and 0.672, against 0.357 / 0.406 for
pro-VLAE without progressive learning and lower numbers with it (Tab. 8). Fig. 11 reads the
traversals: shape, size and orientation in the top layer, the colours in the layers below.

**Data.** 3D Shapes (and dSprites {cite:p}`matthey2017dsprites`) must be downloaded; the book uses a
stand-in that is rendered on the fly and tested (`jebm_lite.data.factors`, `tests/test_factors_disentangle.py`):
32×32 RGB images of one flat object with seven independent factors, shape (4 values), scale (6),
orientation (12), position x (8) and y (8), object colour (6), background colour (4). The training
set is 60,000 draws (seed 0), the test set 10,000 other draws (seed 1). It is **not** 3D Shapes: no
lighting, no floor and wall, flat colours; compare our two models with each other, not with Tab. 8.

**Models** (presets `factors_joint`, `factors_vlae`): the MNIST-family networks on 32×32 RGB
(`factors_small`: three layers of 3 units, VLAE's gated merge), the joint EBM prior against VLAE with
the same networks, one seed (`train.seed` 1234), trained for the profile's iterations.

**Scores** (`jebm_lite.disentangle`): every code unit (posterior means of the 10,000 test images) is
discretised into 20 bins (the histogram estimator of disentanglement_lib
{cite:p}`locatello2019challenging`), $I(z_j; v_k)$ is scikit-learn's plug-in mutual information,
normalised by the factor entropy $H(v_k)$. MIG averages, over factors, the gap between the two units most
informative about a factor; MIG-sup averages, over units, the gap between the two factors a unit is
most informative about.

$$
\mathrm{MIG} = \frac1K\sum_k \Big[\tilde I(z_{j(k)}; v_k) - \max_{j\ne j(k)} \tilde I(z_j; v_k)\Big],\qquad
\text{MIG-sup} = \frac1J\sum_j \Big[\tilde I(z_j; v_{k(j)}) - \max_{k\ne k(j)} \tilde I(z_j; v_k)\Big]
$$ (eq-mig)

```{literalinclude} /jebm_lite/disentangle.py
:pyobject: mig
```
""")

    code(r'''
from jebm_lite import disentangle
from jebm_lite.data.factors import FACTOR_NAMES

fac_models, fac_info = {}, {}
with timed("3. train / load factors models"):
    for me in ("joint", "vlae"):
        cfg_f = jl.get_config(f"factors_{me}", overrides=CI_SHORT if CI else [])
        learner_f, _, run_f = jebm_lite.runs.run_experiment(cfg_f, device=DEVICE)
        fac_models[me] = learner_f.eval()
        r = run_f.read_result()
        fac_info[me] = {"run": "(temporary, ci)" if CI else str(run_f.path), "iterations": r["steps"],
                        "train time (min)": round(r["wall_time_s"] / 60, 1), "seed": cfg_f.train.seed}
display(pd.DataFrame(fac_info).T)
''')

    code(r'''
N_FAC = 1000 if CI else 10000
fac_test = get_dataset("factors", "test", subset=N_FAC)
x_fac, v_fac = fac_test.tensors(device=DEVICE)
reports, mig_rows = {}, []
with timed("3. MIG / MIG-sup"):
    for me, lrn in fac_models.items():
        codes = metrics.layer_codes(lrn, x_fac)
        rep = disentangle.disentanglement_report([c.cpu() for c in codes], v_fac.cpu(), FACTOR_NAMES)
        reports[me] = rep
        mig_rows.append({"model": "joint EBM prior" if me == "joint" else "VLAE", "MIG": rep.mig,
                         "MIG-sup": rep.mig_sup, "data": f"factors stand-in, {N_FAC} test images",
                         "seed": fac_models[me].cfg.train.seed, "profile": PROFILE})
mig_rows += [{"model": "paper: ours (3D Shapes)", "MIG": 0.554, "MIG-sup": 0.672, "data": "3D Shapes"},
             {"model": "paper: pro-VLAE, no progression (3D Shapes)", "MIG": 0.357, "MIG-sup": 0.406,
              "data": "3D Shapes"}]
display(pd.DataFrame(mig_rows).round(3))
for me, rep in reports.items():
    glue(f"ch08_mig_{me}", rep.mig, display=False)
    glue(f"ch08_migsup_{me}", rep.mig_sup, display=False)
''')

    md(r"""
Which layer carries which factor? For every factor, the unit with the highest normalised mutual
information and its layer ($z_1$ bottom, $z_3$ top), per model, beside Fig. 11's reading:
""")

    code(r'''
FIG11 = {"shape": "top", "scale": "top", "orientation": "top", "object_color": "lower", "bg_color": "lower"}
rows = []
for k, name in enumerate(FACTOR_NAMES):
    row = {"factor": name, "paper (Fig. 11)": FIG11.get(name, "–")}
    for me, rep in reports.items():
        row[f"{me}: layer"] = f"z{int(rep.best_layer[k]) + 1}"
        row[f"{me}: NMI"] = round(float(rep.best_score[k]), 2)
    rows.append(row)
layer_table = pd.DataFrame(rows)
display(layer_table)
top_sem = {me: sum(int(rep.best_layer[FACTOR_NAMES.index(f)]) == 2 for f in ("shape", "scale", "orientation"))
           for me, rep in reports.items()}
low_col = {me: sum(int(rep.best_layer[FACTOR_NAMES.index(f)]) < 2 for f in ("object_color", "bg_color"))
           for me, rep in reports.items()}
for me, rep in reports.items():
    glue(f"ch08_topsem_{me}", top_sem[me], display=False)
    glue(f"ch08_lowcol_{me}", low_col[me], display=False)
    nmi = dict(zip(FACTOR_NAMES, rep.best_score))
    glue(f"ch08_nmi_objcol_{me}", float(nmi["object_color"]), display=False)
    glue(f"ch08_nmi_bgcol_{me}", float(nmi["bg_color"]), display=False)
    glue(f"ch08_nmi_shape_orient_{me}", float(max(nmi["shape"], nmi["orientation"])), display=False)
    glue(f"ch08_nmi_pos_{me}", float(max(nmi["pos_x"], nmi["pos_y"])), display=False)
''')

    code(r'''
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for ax, (me, rep) in zip(axes, reports.items()):
    sns.heatmap(rep.mi_normalized.T, ax=ax, vmin=0, vmax=1, cmap="mako", cbar=ax is axes[-1],
                yticklabels=FACTOR_NAMES,
                xticklabels=[f"z{int(l) + 1}.{j}" for l, j in zip(rep.layer_of_unit,
                             np.concatenate([np.arange(d) for d in fac_models[me].z_dims]))])
    ax.set_title(f"{'joint EBM prior' if me == 'joint' else 'VLAE'}: normalised MI (unit x factor)")
fig.tight_layout()
plt.show()
''')

    md(r"""
The traversals (Fig. 11): each row sweeps one latent unit of one test image's posterior means from
−2 to 2 with the others held (`disentangle.latent_traversal`), top layer first.
""")

    code(r'''
vals = torch.linspace(-2.0, 2.0, 7)
fig, axes = plt.subplots(1, 2, figsize=(12, 6.2))
for ax, (me, lrn) in zip(axes, fac_models.items()):
    rows_t = []
    for layer in reversed(range(len(lrn.z_dims))):
        for d in range(lrn.z_dims[layer]):
            rows_t.append(disentangle.latent_traversal(lrn, x_fac[:1], layer, d, vals)[0])
    viz.show_grid(torch.cat(rows_t), nrow=len(vals), ax=ax,
                  title=f"{'joint EBM prior' if me == 'joint' else 'VLAE'}: rows z3.0 ... z1.2 (top first)")
fig.tight_layout()
plt.show()
''')
