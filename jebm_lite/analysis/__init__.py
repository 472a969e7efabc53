"""Analyses of trained learners: metrics and latent probes (:mod:`.metrics`), FID (:mod:`.fid`), hierarchical
sampling (:mod:`.hierarchy`), anomaly / OOD scores (:mod:`.anomaly`), the latent attack (:mod:`.attack`),
long-run chains (:mod:`.longrun`), disentanglement (:mod:`.disentangle`) and figures (:mod:`.viz`)."""
