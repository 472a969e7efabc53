"""Training: the learner contract (:mod:`.learner`), one learner per method (:mod:`.learners`), the loop with
checkpoints, resume and the divergence guard (:mod:`.trainer`), run directories and result records
(:mod:`.rundir`), load-or-train (:mod:`.load`), pretrained-run archives (:mod:`.archive`) and data parallelism
(:mod:`.distributed`)."""
