"""Analyses of trained learners: metrics and latent probes (:mod:`.metrics`), FID (:mod:`.fid`), hierarchical
sampling (:mod:`.hierarchy`), anomaly / OOD scores (:mod:`.anomaly`), the latent attack (:mod:`.attack`),
long-run chains (:mod:`.longrun`), code kits and the probe's own noise (:mod:`.codekit`, :mod:`.probe_study`), what each layer controls (:mod:`.readout`), disentanglement
(:mod:`.disentangle`), why the ICML 2024 prior lives in u-space (:mod:`.diffusion`), figures (:mod:`.viz`) and
trained models as ONNX graphs for the book's pages (:mod:`.export`)."""
