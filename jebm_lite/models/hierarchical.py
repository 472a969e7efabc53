"""The hierarchical generator (paper Eq. 5) and the ladder inference network (paper Eq. 8).

Generator (paper Eq. 5), layers bottom (z_1, index 0) to top (z_L, index L-1)::

    h_L = g_L(z_L),   h_i = g_i(merge(z_i, h_{i+1})),   x_hat = h_1 in [-1, 1] (tanh)

``merge`` is ``"concat"`` (paper Eq. 5; z_i is first projected by Linear + LeakyReLU(0.2) to the shape of
h_{i+1}, then concatenated on the channel / feature axis, as in ``hre:train_fid.py``) or ``"add"`` (a
Linear projection of z_i, no activation, added to h_{i+1}, as in ``hre:train_hs.py``; this equals a
concatenation followed by a linear layer), or ``"gated"`` (VLAE's gated add: Linear + LeakyReLU, times a
learned per-unit gate initialised to 0.1, added to h_{i+1}).

Inference (paper Eq. 8, VLAE "ladder" layout)::

    r_0 = x,   r_{i+1} = trunk_i(r_i),   (mu_i, logvar_i) = head_i(r_i),   i = 0 .. L-1 (code index)

Each head has the same layer types as the trunk stage at its level but its own weights (no sharing),
exactly as the reference code's ``ladder*`` / ``inference*`` modules (report section 1.4). The log-variance
of every head is **clamped to [-10, 5]** (:data:`LOGVAR_RANGE`; sigma in [0.0067, 12.2]); the reference
code does not clamp. The clamp only matters for diverging runs (it zeroes the gradient outside the range).

Presets (:data:`PRESETS`; ``ModelConfig.preset``). Exact parameter counts (generator G, inference I; the
EBM is not included) at the preset defaults:

===============  ========  ============  ==========  ==========  ============  ===========================
preset           image     z_dims        channels    hidden      G             I
===============  ========  ============  ==========  ==========  ============  ===========================
``svhn4``        3x32x32   2, 2, 2, 10   32,64,64,   256         392,288       752,160
                                         256
``svhn5``        3x32x32   10 x 5        128,256,    2048        55,348,608    18,999,396
                                         256,512,
                                         1024
``cifar10``      3x32x32   10 x 5        as svhn5    2048        55,348,608    18,999,396
``celeba64``     3x64x64   10 x 4        64,128,     1024        13,784,768    7,327,312
                                         256,256
``mnist_small``  1x28x28   2, 2, 2       16, 32      400         1,443,616     1,776,780
``toy012``       1x28x28   2, 2          16, 32      256         544,800       557,448
``lebm_mnist``   1x28x28   2             16, 32      256         477,984       14,724
``factors_small`` 3x32x32  3, 3, 3       16, 32      256         867,840       1,018,386
``toy012_spatial`` 1x28x28 2, 2          32, 256     256         521,408       529,416
``mnist_spatial`` 1x28x28  2, 2, 2       32, 64,     256         406,496       1,066,252
                                         256
===============  ========  ============  ==========  ==========  ============  ===========================

Sources: ``svhn4`` = ``hre:train_hs.py`` (report 1.4) and ``svhn5`` = ``hre:train_fid.py`` (report 1.5),
both exact (the report's G ~ 0.39 M / I ~ 0.75 M and G ~ 55.3 M / I ~ 19.0 M). Everything else is
**[inferred]** (no released code): ``cifar10`` reuses the svhn5 layout; ``celeba64`` is a VLAE-large-like
concat layout (conv stages at 32, 16, 8; the top layer adds one conv4s2 to 4x4 before its MLP of width
1024: ``top_down=1``); the MNIST family is VLAE-small without BatchNorm, with VLAE's gated-add merge. ``mnist_small`` has
G + I = 3,220,396 parameters, about the 3.2 M of the paper's Tab. 7 (joint-prior model on Fashion-MNIST),
with thin bottom convs (16, 32) and fully connected width 400 so that it trains on a laptop CPU.
``toy012_spatial`` / ``mnist_spatial`` apply the ``svhn4`` pattern (each lower layer's code is linearly
projected and added at a spatial resolution, so the bottom layer's path to the image is shallow) to
28x28 images; ``top_down=1`` lets the top layer end in a 7x7 map so that even with L = 2 the bottom
layer merges spatially. ``toy012`` / ``lebm_mnist`` keep the layout but use thinner convs (16, 32) and width 256 so that the
toy runs and the LEBM posterior Langevin (20 generator gradients per iteration) stay cheap on CPU.
:func:`preset_table` recomputes the counts.

CPU cost (measured, 2 cores of an AMD EPYC, torch 2.14, machine otherwise idle; G + I forward and
backward at batch 100): ``mnist_small`` ~40 ms (gated merge, hidden 400), ``toy012`` ~25 ms,
``lebm_mnist`` ~15 ms (one posterior-Langevin generator gradient ~7 ms). VLAE-small's own conv widths
(``model.channels=64,128``) cost several times more per iteration on a CPU; the thin convs keep the
MNIST chapters laptop-sized.

The three layout families:

* ``"medium"`` (``svhn4``): ``channels = (c_0, ..., c_{L-1})``; stage j <= L-2 of the inference net is
  conv4s2(c_{j-1} -> c_j) + conv3s1(c_j -> c_j) (no bias, leaky_relu 0.01); the top head is
  flatten -> fc(c_{L-1}) -> fc(c_{L-1}). Generator: g_L = MLP z_L -> hidden -> hidden -> c_{L-2} (a vector);
  layer L-2 maps the merged vector by Linear to c_{L-2} x s x s, then ConvT4s2 + LReLU + ConvT3s1 (no
  activation); lower layers are ConvT4s2(c_j -> c_j) + LReLU + ConvT3s1(c_j -> c_{j-1}); Tanh at the bottom.
* ``"fid"`` (``svhn5``, ``cifar10``, ``celeba64``): ``channels = (c_0, ..., c_{L-1})``, ``hidden`` is the
  width of g_L's MLP. Inference stages as above (the top head is fc(c_{L-1}) -> fc(c_{L-1}) after
  ``top_down`` extra conv4s2 layers). Generator: g_L = MLP z_L -> hidden -> hidden -> c_{L-1} x s x s
  (then ``top_down`` ConvT4s2 layers); layer j: ConvT3s1(2c_{j+1} -> c_{j+1}), ConvT4s2(c_{j+1} -> c_j),
  ConvT3s1(c_j -> c_j), every one followed by LReLU(0.2); the bottom adds ConvT3s1(c_0 -> C) + Tanh.
* ``"small"`` (``mnist_small``, ``toy012``, ``lebm_mnist``; VLAE-small, report section 3.2): ``channels =
  (c_1, c_2)`` of the bottom layer's two conv4s2 layers (28 -> 14 -> 7), every other layer is fully
  connected with width ``hidden``. Inference: head_0 = conv4s2(C -> c_1), conv4s2(c_1 -> c_2), flatten ->
  mu / logvar; trunk_0 = the same convs (own weights) + fc(hidden); head_i = 2 fc + mu / logvar; trunk_i =
  3 fc (leaky_relu 0.01 throughout). Generator (LReLU 0.2): g_L = MLP z_L -> hidden x 3; g_i (0 < i < L-1)
  = merge(z_i, h_{i+1}) -> 3 fc; g_1 = merge(z_1, h_2) -> fc(c_2 x 7 x 7) -> convT4s2(c_2 -> c_1) ->
  convT4s2(c_1 -> C) -> tanh, where merge is VLAE's gated add ``h + gate * lrelu(W z)`` (gate per unit,
  initialised to 0.1; ``merge="concat"`` gives ``[lrelu(W z), h]`` instead). The gate matters: with the
  concat merge the bottom code of the 0/1/2 toy took over digit identity in every run we made (its
  probe accuracy above the top layer's), with the gate the top layer holds it (chapter 5). With L = 1: z -> hidden -> hidden -> the same
  image tail. **No BatchNorm** (VLAE has BN everywhere): BN in train mode couples the
  images of a batch, so one chain's sample depends on the others -- this breaks hierarchical sampling
  (fixing every layer but one) and makes the Langevin gradients of one chain depend on the batch.
  ``ModelConfig.norm = "layer"`` puts a per-sample normalisation where VLAE has its BN instead
  (LayerNorm after every hidden Linear, GroupNorm(1, C) after every hidden convolution, in both networks;
  not after the z-projections or the output layers): it conditions the deep fully connected paths the way
  BN does without coupling a batch. Off by default (the presets' parameter counts above are without it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from jebm_lite.config import NORMS, ModelConfig
from jebm_lite.models.blocks import (
    GEN_SLOPE,
    INF_SLOPE,
    Gate,
    GaussianHead,
    Reshape,
    conv_block,
    count_params,
    deconv_block,
    fc_block,
    mlp,
    xavier_init_,
)
from jebm_lite.runtime import ConfigError

LOGVAR_RANGE: tuple[float, float] = (-10.0, 5.0)
MERGES = ("concat", "add", "gated")

# ----------------------------------------------------------------------------------------------
# The two networks
# ----------------------------------------------------------------------------------------------


class HierarchicalGenerator(nn.Module):
    """g_beta of paper Eq. 5: ``h_L = g_L(z_L)``, ``h_i = g_i(merge(z_i, h_{i+1}))``, ``x_hat = h_1``.

    Args:
        z_dims: latent sizes, bottom (z_1) to top (z_L).
        image_shape: ``(C, H, W)`` of the output.
        top: g_L, maps ``z_L: (B, z_dims[-1])`` to h_L (for ``L = 1``: directly to the image).
        projections: ``L - 1`` modules; ``projections[i]`` maps ``z_i: (B, z_dims[i])`` to a tensor with the
            shape of h_{i+1} (``merge="concat"``: Linear + LeakyReLU; ``"add"``: Linear).
        bodies: ``L - 1`` modules; ``bodies[i]`` maps the merged tensor to h_i; ``bodies[0]`` ends in tanh.
        merge: ``"concat"`` (on dim 1: channels or features) or ``"add"``.
    """

    def __init__(
        self,
        z_dims: Sequence[int],
        image_shape: Sequence[int],
        top: nn.Module,
        projections: Sequence[nn.Module],
        bodies: Sequence[nn.Module],
        merge: str = "concat",
    ) -> None:
        super().__init__()
        self.z_dims: tuple[int, ...] = tuple(int(d) for d in z_dims)
        self.image_shape: tuple[int, int, int] = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
        if merge not in MERGES:
            raise ConfigError(f"merge={merge!r} is not one of {', '.join(MERGES)}")
        L = len(self.z_dims)
        if len(projections) != L - 1 or len(bodies) != L - 1:
            raise ValueError(f"need {L - 1} projections and bodies for {L} layers")
        self.merge = merge
        self.top = top
        self.projections = nn.ModuleList(projections)
        self.bodies = nn.ModuleList(bodies)

    @property
    def n_layers(self) -> int:
        return len(self.z_dims)

    def _as_list(self, zs: Sequence[Tensor] | Tensor) -> list[Tensor]:
        if isinstance(zs, Tensor):
            if zs.dim() != 2 or zs.shape[1] != sum(self.z_dims):
                raise ValueError(f"expected (B, {sum(self.z_dims)}) or a list of {self.n_layers} layers, got {tuple(zs.shape)}")
            return list(torch.split(zs, self.z_dims, dim=1))
        zs = list(zs)
        if len(zs) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} latent layers (bottom -> top), got {len(zs)}")
        for i, (z, d) in enumerate(zip(zs, self.z_dims)):
            if z.dim() != 2 or z.shape[1] != d:
                raise ValueError(f"zs[{i}] must be (B, {d}), got {tuple(z.shape)}")
        return zs

    def features(self, zs: Sequence[Tensor] | Tensor) -> list[Tensor]:
        """All h's of paper Eq. 5, bottom to top: ``[h_1 (= x_hat), h_2, ..., h_L]``."""
        zs = self._as_list(zs)
        h = self.top(zs[-1])
        hs = [h]
        for i in range(self.n_layers - 2, -1, -1):
            p = self.projections[i](zs[i])
            u = (
                torch.cat([p, h], dim=1) if self.merge == "concat" else h + p
            )  # "gated": p = gate * lrelu(Wz)
            h = self.bodies[i](u)
            hs.append(h)
        return hs[::-1]

    def forward(self, zs: Sequence[Tensor] | Tensor) -> Tensor:
        """Paper Eq. 5. ``zs``: list of ``(B, z_dims[i])`` bottom to top, or their concatenation ``(B, sum d)``.

        Returns ``x_hat: (B, C, H, W)`` in [-1, 1].
        """
        return self.features(zs)[0]


class LadderInference(nn.Module):
    """q_phi(z|x) of paper Eq. 8 in the VLAE ladder layout.

    ``r_0 = x``, ``r_{i+1} = trunks[i](r_i)``, ``(mu_i, logvar_i) = heads[i](r_i)`` (code index i = 0 .. L-1).
    Heads and trunk stages have the same layer types but separate weights (reference ``ladder*`` /
    ``inference*``). Log-variances are clamped to :data:`LOGVAR_RANGE` inside the heads.

    Args:
        z_dims: latent sizes, bottom to top.
        image_shape: ``(C, H, W)`` of the input.
        trunks: ``L - 1`` modules r_i -> r_{i+1}.
        heads: ``L`` modules r_i -> (mu_i, logvar_i), each ``(B, z_dims[i])``.
    """

    def __init__(
        self,
        z_dims: Sequence[int],
        image_shape: Sequence[int],
        trunks: Sequence[nn.Module],
        heads: Sequence[nn.Module],
    ) -> None:
        super().__init__()
        self.z_dims: tuple[int, ...] = tuple(int(d) for d in z_dims)
        self.image_shape: tuple[int, int, int] = tuple(int(s) for s in image_shape)  # type: ignore[assignment]
        L = len(self.z_dims)
        if len(trunks) != L - 1 or len(heads) != L:
            raise ValueError(f"need {L - 1} trunk stages and {L} heads for {L} layers")
        self.trunks = nn.ModuleList(trunks)
        self.heads = nn.ModuleList(heads)

    @property
    def n_layers(self) -> int:
        return len(self.z_dims)

    def forward(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Paper Eq. 8. ``x: (B, C, H, W)`` in [-1, 1] -> ``[(mu_i, logvar_i)]`` bottom to top, each ``(B, z_dims[i])``."""
        out = []
        r = x
        for i in range(self.n_layers):
            out.append(self.heads[i](r))
            if i < self.n_layers - 1:
                r = self.trunks[i](r)
        return out

    def rsample(self, x: Tensor, use_mean: bool = False) -> tuple[list[Tensor], list[tuple[Tensor, Tensor]]]:
        """Reparameterised draw ``z_i = mu_i + exp(logvar_i / 2) * eps_i`` (or ``mu_i`` with ``use_mean``).

        Returns ``(zs, params)``: ``zs[i]: (B, z_dims[i])`` bottom to top and the ``(mu, logvar)`` list.
        """
        params = self.forward(x)
        if use_mean:
            return [mu for mu, _ in params], params
        zs = [mu + torch.exp(0.5 * lv) * torch.randn_like(mu) for mu, lv in params]
        return zs, params


# ----------------------------------------------------------------------------------------------
# Presets
# ----------------------------------------------------------------------------------------------


PRESETS: dict[str, dict[str, Any]] = {
    "svhn4": dict(
        family="medium", image_shape=(3, 32, 32), z_dims=(2, 2, 2, 10), channels=(32, 64, 64, 256),
        hidden=256, merge="add", top_down=0,
        source="reference train_hs.py, 4-layer hierarchical-sampling model, exact",
    ),
    "svhn5": dict(
        family="fid", image_shape=(3, 32, 32), z_dims=(10, 10, 10, 10, 10), channels=(128, 256, 256, 512, 1024),
        hidden=2048, merge="concat", top_down=0,
        source="reference train_fid.py, 5-layer FID model, exact",
    ),
    "cifar10": dict(
        family="fid", image_shape=(3, 32, 32), z_dims=(10, 10, 10, 10, 10), channels=(128, 256, 256, 512, 1024),
        hidden=2048, merge="concat", top_down=0,
        source="[inferred] the svhn5 layout on CIFAR-10 (no released code)",
    ),
    "celeba64": dict(
        family="fid", image_shape=(3, 64, 64), z_dims=(10, 10, 10, 10), channels=(64, 128, 256, 256),
        hidden=1024, merge="concat", top_down=1,
        source="[inferred] VLAE-large-like concat layout: conv stages 32/16/8, top layer conv to 4x4 + MLP",
    ),
    "mnist_small": dict(
        family="small", image_shape=(1, 28, 28), z_dims=(2, 2, 2), channels=(16, 32), hidden=400,
        merge="gated", top_down=0,
        source="[inferred] VLAE-small without BatchNorm, VLAE's gated-add merge",
    ),
    "toy012": dict(
        family="small", image_shape=(1, 28, 28), z_dims=(2, 2), channels=(16, 32), hidden=256,
        merge="gated", top_down=0,
        source="[inferred] VLAE-small without BatchNorm, gated-add merge, L = 2 (0/1/2-MNIST toy)",
    ),
    "toy012_spatial": dict(
        family="medium", image_shape=(1, 28, 28), z_dims=(2, 2), channels=(32, 256), hidden=256,
        merge="add", top_down=1,
        source="[inferred] the reference train_hs.py pattern on 28x28, L = 2",
    ),
    "mnist_spatial": dict(
        family="medium", image_shape=(1, 28, 28), z_dims=(2, 2, 2), channels=(32, 64, 256), hidden=256,
        merge="add", top_down=0,
        source="[inferred] the reference train_hs.py pattern on 28x28, L = 3",
    ),
    "factors_small": dict(
        family="small", image_shape=(3, 32, 32), z_dims=(3, 3, 3), channels=(16, 32), hidden=256,
        merge="gated", top_down=0,
        source="[inferred] the MNIST-family layout on 32x32 RGB, 3 layers of 3 units (pro-VLAE's 3D Shapes sizes)",
    ),
    "lebm_mnist": dict(
        family="small", image_shape=(1, 28, 28), z_dims=(2,), channels=(16, 32), hidden=256,
        merge="concat", top_down=0,
        source="[inferred] VLAE-small without BatchNorm, L = 1 (single-layer LEBM baseline)",
    ),
}
"""Preset defaults. ``channels``: see the family descriptions in the module docstring."""

CONDITIONAL_PRESETS = ("conditional3", "conditional6")


def _unknown_preset(name: str) -> ConfigError:
    extra = ""
    if name in CONDITIONAL_PRESETS or name.startswith("conditional"):
        extra = (f" Preset {name!r} is a conditional-Gaussian hierarchy: build it with "
                 "jebm_lite.models.ConditionalHierarchy.from_config(cfg).")
    return ConfigError(
        f"Unknown model preset {name!r}; valid options for build_hierarchical: {', '.join(PRESETS)} "
        f"(model.preset=...).{extra}"
    )


def resolve_preset(cfg: Any, image_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """The preset's architecture with the ``ModelConfig`` overrides applied and checked.

    Args:
        cfg: a :class:`~jebm_lite.config.ModelConfig` (``preset`` plus optional ``z_dims``, ``channels``,
            ``hidden``, ``merge`` overrides), or a preset name.
        image_shape: ``(C, H, W)`` to use instead of the preset's own (e.g. the data's shape).

    Returns:
        a dict with keys ``preset, family, image_shape, z_dims, channels, hidden, merge, norm, top_down, source``.

    Raises:
        ConfigError: unknown preset or merge (the valid options are listed), or an override that does not
            fit the layout (e.g. ``channels`` of the wrong length for the number of layers, an image size
            not divisible by the total down-sampling).
    """
    if isinstance(cfg, str):
        name, over = cfg, {}
    else:
        name = cfg.preset
        over = {k: getattr(cfg, k, None) for k in ("z_dims", "channels", "hidden", "merge", "norm")}
    if name not in PRESETS:
        raise _unknown_preset(name)
    spec = dict(PRESETS[name])
    spec["preset"] = name
    for k, v in over.items():
        if v is not None:
            spec[k] = tuple(int(a) for a in v) if k in ("z_dims", "channels") else v
    if image_shape is not None:
        spec["image_shape"] = tuple(int(s) for s in image_shape)

    fam = spec["family"]
    z_dims, channels = tuple(spec["z_dims"]), tuple(spec["channels"])
    C, H, W = spec["image_shape"] if len(spec["image_shape"]) == 3 else (None, None, None)
    L = len(z_dims)
    if C is None:
        raise ConfigError(f"image_shape must be (C, H, W), got {spec['image_shape']!r}")
    if L < 1 or any(d < 1 for d in z_dims):
        raise ConfigError(f"model.z_dims must be a non-empty tuple of positive sizes, got {z_dims!r}")
    if spec["merge"] not in MERGES:
        raise ConfigError(f"model.merge={spec['merge']!r} is not one of {', '.join(MERGES)}")
    spec.setdefault("norm", "none")
    if spec["norm"] not in NORMS:
        raise ConfigError(f"model.norm={spec['norm']!r} is not one of {', '.join(NORMS)}")
    if spec["norm"] != "none" and spec["family"] != "small":
        raise ConfigError(
            f"model.norm={spec['norm']!r} is implemented for the VLAE-small family only (mnist_small, toy012, "
            f"lebm_mnist, factors_small), not preset {name!r}; set model.norm=none"
        )
    if int(spec["hidden"]) < 1 or any(c < 1 for c in channels):
        raise ConfigError("model.hidden and model.channels must be positive")
    default = PRESETS[name]
    if fam == "small":
        if len(channels) != 2:
            raise ConfigError(
                f"Preset {name!r} (VLAE-small family) takes model.channels = (c1, c2), the two conv layers of the "
                f"bottom layer (default {default['channels']}); got {channels!r} ({len(channels)} entries)."
            )
        factor = 4
    else:
        if L < 2:
            raise ConfigError(f"Preset {name!r} needs at least 2 latent layers (model.z_dims), got {z_dims!r}.")
        if len(channels) != L:
            raise ConfigError(
                f"Preset {name!r} needs one channel width per latent layer: len(model.channels) must equal "
                f"len(model.z_dims) = {L}, got {len(channels)} ({channels!r}). Preset default: "
                f"z_dims={default['z_dims']}, channels={default['channels']}; set both model.z_dims and "
                f"model.channels to change the number of layers."
            )
        factor = 2 ** (L - 1 + int(spec["top_down"]))
    if H % factor or W % factor:
        raise ConfigError(
            f"Preset {name!r} with {L} layers down-samples by {factor}; the image size {H}x{W} must be divisible "
            f"by it (use fewer layers or resize the data)."
        )
    spec["z_dims"], spec["channels"], spec["hidden"] = z_dims, channels, int(spec["hidden"])
    spec["image_shape"] = (C, H, W)
    return spec


# ----------------------------------------------------------------------------------------------
# Builders, one per family
# ----------------------------------------------------------------------------------------------


def _proj(d: int, shape: Sequence[int], merge: str) -> nn.Module:
    """z_i -> tensor shaped like h_{i+1}: Linear (+ LeakyReLU(0.2) for concat / gated) (+ reshape) (+ gate).

    ``merge="gated"`` is VLAE's gated add: ``h_{i+1} + gate * lrelu(W z_i)`` with one gate per unit
    (per channel for a spatial map), initialised to 0.1, so a lower layer starts with a small say.
    """
    n = 1
    for s in shape:
        n *= int(s)
    mods: list[nn.Module] = [nn.Linear(d, n)]
    if merge in ("concat", "gated"):
        mods.append(nn.LeakyReLU(GEN_SLOPE))
    if len(shape) > 1:
        mods.append(Reshape(*shape))
    if merge == "gated":
        mods.append(Gate((shape[0],) + (1,) * (len(shape) - 1)))
    return nn.Sequential(*mods)


def _build_medium(spec: dict) -> tuple[HierarchicalGenerator, LadderInference]:
    """``hre:train_hs.py`` layout (report 1.4); see the module docstring."""
    z, c, hd, merge = spec["z_dims"], spec["channels"], spec["hidden"], spec["merge"]
    C, H, W = spec["image_shape"]
    L = len(z)
    m = 2 if merge == "concat" else 1
    sh = [(H >> (j + 1), W >> (j + 1)) for j in range(L - 1)]  # spatial size after stage j
    # inference
    heads, trunks = [], []
    for j in range(L - 1):
        cin = C if j == 0 else c[j - 1]
        feat = nn.Sequential(conv_block(cin, c[j], True), conv_block(c[j], c[j], False))
        heads.append(GaussianHead(feat, c[j] * sh[j][0] * sh[j][1], z[j], LOGVAR_RANGE))
        trunks.append(nn.Sequential(conv_block(cin, c[j], True), conv_block(c[j], c[j], False)))
    td = int(spec.get("top_down", 0))
    top_mods: list[nn.Module] = [conv_block(c[L - 2], c[L - 2], True) for _ in range(td)]
    s_top = (sh[L - 2][0] >> td, sh[L - 2][1] >> td)
    top_in = c[L - 2] * s_top[0] * s_top[1]
    feat = nn.Sequential(*top_mods, nn.Flatten(), fc_block(top_in, c[L - 1]), fc_block(c[L - 1], c[L - 1]))
    heads.append(GaussianHead(feat, c[L - 1], z[L - 1], LOGVAR_RANGE))
    inf = LadderInference(z, (C, H, W), trunks, heads)
    # generator
    if td == 0:  # reference: g_L is an MLP to a vector; layer L-1 merges in vector space
        top: nn.Module = mlp([z[L - 1], hd, hd, c[L - 2]], GEN_SLOPE, final_act=False)
    else:  # g_L ends in a (c, s, s) map, up-sampled `td` times: every lower layer merges spatially
        ups: list[nn.Module] = []
        for k in range(td):
            ups.append(deconv_block(c[L - 2], c[L - 2], True, slope=GEN_SLOPE if k < td - 1 else None))
        top = nn.Sequential(
            mlp([z[L - 1], hd, hd, c[L - 2] * s_top[0] * s_top[1]], GEN_SLOPE, final_act=True),
            Reshape(c[L - 2], *s_top), *ups,
        )
    projs: list[nn.Module] = [nn.Identity()] * (L - 1)
    bodies: list[nn.Module] = [nn.Identity()] * (L - 1)
    for j in range(L - 2, -1, -1):
        out_c = C if j == 0 else c[j - 1]
        tail: list[nn.Module] = [nn.Tanh()] if j == 0 else []
        if j == L - 2 and td == 0:  # merge in vector space, then Linear -> c x s x s
            s = sh[L - 2]
            projs[j] = _proj(z[j], (c[j],), merge)
            bodies[j] = nn.Sequential(
                nn.Linear(m * c[j], c[j] * s[0] * s[1]), nn.LeakyReLU(GEN_SLOPE), Reshape(c[j], *s),
                deconv_block(c[j], c[j], True), deconv_block(c[j], out_c, False, slope=None), *tail,
            )
        else:
            projs[j] = _proj(z[j], (c[j], *sh[j]), merge)
            bodies[j] = nn.Sequential(
                deconv_block(m * c[j], c[j], True), deconv_block(c[j], out_c, False, slope=None), *tail,
            )
    gen = HierarchicalGenerator(z, (C, H, W), top, projs, bodies, merge)
    return gen, inf


def _build_fid(spec: dict) -> tuple[HierarchicalGenerator, LadderInference]:
    """``hre:train_fid.py`` layout (report 1.5); see the module docstring."""
    z, c, hd, merge, td = spec["z_dims"], spec["channels"], spec["hidden"], spec["merge"], int(spec["top_down"])
    C, H, W = spec["image_shape"]
    L = len(z)
    m = 2 if merge == "concat" else 1
    S = [(H >> j, W >> j) for j in range(L + td)]  # spatial size after j down-samplings
    # inference
    heads, trunks = [], []
    for j in range(L - 1):
        cin = C if j == 0 else c[j - 1]
        feat = nn.Sequential(conv_block(cin, c[j], True), conv_block(c[j], c[j], False))
        heads.append(GaussianHead(feat, c[j] * S[j + 1][0] * S[j + 1][1], z[j], LOGVAR_RANGE))
        trunks.append(nn.Sequential(conv_block(cin, c[j], True), conv_block(c[j], c[j], False)))
    top_mods: list[nn.Module] = []
    ch = c[L - 2]
    for _ in range(td):
        top_mods.append(conv_block(ch, c[L - 1], True))
        ch = c[L - 1]
    s_top = S[L - 1 + td]
    top_mods += [nn.Flatten(), fc_block(ch * s_top[0] * s_top[1], c[L - 1]), fc_block(c[L - 1], c[L - 1])]
    heads.append(GaussianHead(nn.Sequential(*top_mods), c[L - 1], z[L - 1], LOGVAR_RANGE))
    inf = LadderInference(z, (C, H, W), trunks, heads)
    # generator: h_L has c[L-1] channels at S[L-1]
    g_top: list[nn.Module] = [
        mlp([z[L - 1], hd, hd, c[L - 1] * s_top[0] * s_top[1]], GEN_SLOPE, final_act=True),
        Reshape(c[L - 1], *s_top),
    ]
    g_top += [deconv_block(c[L - 1], c[L - 1], True) for _ in range(td)]
    top = nn.Sequential(*g_top)
    projs, bodies = [], []
    for j in range(L - 1):
        cj1 = c[j + 1]
        projs.append(_proj(z[j], (cj1, *S[j + 1]), merge))
        mods: list[nn.Module] = [
            deconv_block(m * cj1, cj1, False), deconv_block(cj1, c[j], True), deconv_block(c[j], c[j], False),
        ]
        if j == 0:
            mods += [deconv_block(c[0], C, False, slope=None), nn.Tanh()]
        bodies.append(nn.Sequential(*mods))
    gen = HierarchicalGenerator(z, (C, H, W), top, projs, bodies, merge)
    return gen, inf


def _build_small(spec: dict) -> tuple[HierarchicalGenerator, LadderInference]:
    """VLAE-small layout without BN (report 3.2); see the module docstring.

    ``spec["norm"] == "layer"`` puts a per-sample LayerNorm (GroupNorm(1, C) after a convolution) before
    every hidden activation of both networks: VLAE's BatchNorm positions, without coupling a batch. The
    z-projections of the merge and the output layers stay unnormalised.
    """
    z, (c1, c2), h, merge = spec["z_dims"], spec["channels"], spec["hidden"], spec["merge"]
    nm = spec["norm"] == "layer"
    C, H, W = spec["image_shape"]
    L = len(z)
    m = 2 if merge == "concat" else 1
    s = (H // 4, W // 4)
    flat = c2 * s[0] * s[1]

    def convs() -> nn.Sequential:
        return nn.Sequential(conv_block(C, c1, True, norm=nm), conv_block(c1, c2, True, norm=nm), nn.Flatten())

    def fc(d_in: int, d_out: int) -> nn.Sequential:
        return fc_block(d_in, d_out, INF_SLOPE, norm=nm)

    # inference
    heads: list[nn.Module] = [GaussianHead(convs(), flat, z[0], LOGVAR_RANGE)]
    trunks: list[nn.Module] = []
    if L > 1:
        trunks.append(nn.Sequential(convs(), fc(flat, h)))
    for i in range(1, L):
        heads.append(GaussianHead(nn.Sequential(fc(h, h), fc(h, h)), h, z[i], LOGVAR_RANGE))
        if i < L - 1:
            trunks.append(nn.Sequential(fc(h, h), fc(h, h), fc(h, h)))
    inf = LadderInference(z, (C, H, W), trunks, heads)

    # generator
    def image_tail(d_in: int) -> list[nn.Module]:
        return [
            *fc_block(d_in, flat, GEN_SLOPE, norm=nm), Reshape(c2, *s),
            deconv_block(c2, c1, True, norm=nm), deconv_block(c1, C, True, slope=None), nn.Tanh(),
        ]

    if L == 1:
        top: nn.Module = nn.Sequential(mlp([z[0], h, h], GEN_SLOPE, final_act=True, norm=nm), *image_tail(h))
        gen = HierarchicalGenerator(z, (C, H, W), top, [], [], merge)
        return gen, inf
    top = mlp([z[L - 1], h, h, h], GEN_SLOPE, final_act=True, norm=nm)
    projs, bodies = [], []
    for i in range(L - 1):
        projs.append(_proj(z[i], (h,), merge))
        if i == 0:
            bodies.append(nn.Sequential(*image_tail(m * h)))
        else:
            bodies.append(mlp([m * h, h, h, h], GEN_SLOPE, final_act=True, norm=nm))
    gen = HierarchicalGenerator(z, (C, H, W), top, projs, bodies, merge)
    return gen, inf


_BUILDERS = {"medium": _build_medium, "fid": _build_fid, "small": _build_small}


def build_hierarchical(
    cfg: Any, image_shape: tuple[int, int, int] | None = None
) -> tuple[HierarchicalGenerator, LadderInference]:
    """Build ``(generator, inference)`` for a :class:`~jebm_lite.config.ModelConfig` (or a preset name).

    Convolutions get xavier-normal weights (reference ``weights_init``); Linear layers keep the PyTorch
    default. ``image_shape`` (C, H, W) overrides the preset's (it must fit the down-sampling).

    Raises:
        ConfigError: see :func:`resolve_preset`.
    """
    spec = resolve_preset(cfg, image_shape)
    gen, inf = _BUILDERS[spec["family"]](spec)
    xavier_init_(gen)
    xavier_init_(inf)
    gen.spec = dict(spec)  # type: ignore[assignment]
    inf.spec = dict(spec)  # type: ignore[assignment]
    return gen, inf


def preset_table() -> list[dict[str, Any]]:
    """Per preset: image shape, z_dims, and the exact parameter counts of G and I (the docstring table)."""
    rows = []
    for name in PRESETS:
        g, i = build_hierarchical(name)
        rows.append(dict(preset=name, image_shape=g.image_shape, z_dims=g.z_dims,
                         G=count_params(g), I=count_params(i), source=PRESETS[name]["source"]))
    return rows


def model_config_for(preset: str, **overrides: Any) -> Any:
    """A :class:`~jebm_lite.config.ModelConfig` for ``preset`` with field overrides (a small convenience)."""
    return dataclasses.replace(ModelConfig(preset=preset), **overrides)
