"""The paper's tables, cell by cell, each cell one result file: Tab. 1 (:mod:`.latent_table`), its seed campaign (:mod:`.campaign`) and the findings at a glance
(:mod:`.findings`), Tab. 3
(:mod:`.anomaly_table`), Tabs. 4-5 (:mod:`.ablation`), Figs. 1 and 4 as measured runs (:mod:`.fig1`,
:mod:`.fig4`), result rows as markdown (:mod:`.tables`), and reconstruction MSE / FID of a run (:mod:`.evaluate`)."""
