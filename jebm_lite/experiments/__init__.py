"""The paper's tables, cell by cell, each cell one result file: Tab. 1 (:mod:`.latent_table`), Tab. 3
(:mod:`.anomaly_table`), Tabs. 4-5 (:mod:`.ablation`), and reconstruction MSE / FID of a run (:mod:`.evaluate`)."""
