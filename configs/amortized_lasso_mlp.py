"""Fully amortized LASSO: an MLP maps y to the LASSO solution (objective-based),
FISTA fine-tuning at evaluation."""

CONFIG = {
    "method": "amortized",
    "problem": "lasso_m64_n128_p0.1_snr40",
    "loss": "objective",
    "solver": "fista",
    "hidden": [512, 512],
    "steps": 3000,
    "eval_iters": 50,
    "num_test": 256,
}
