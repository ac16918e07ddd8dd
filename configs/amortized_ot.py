"""Amortized entropic OT (Meta OT): an MLP predicts the dual potential from the two
histograms and warm-starts Sinkhorn."""

CONFIG = {
    "method": "amortized",
    "problem": "entropic_ot_n32_eps0.01",
    "loss": "objective",
    "solver": "native",
    "hidden": [256, 256],
    "steps": 2000,
    "eval_iters": 50,
    "num_test": 256,
}
