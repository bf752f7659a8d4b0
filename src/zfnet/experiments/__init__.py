"""The paper's experiments on top of a trained model: ablations (Tables 2, 3, Fig. 6), transfer
(Tables 4-6, Fig. 9) and per-layer probes (Table 7)."""
