"""ALISTA (analytic W, learned per-layer step and threshold), K=16."""

CONFIG = {
    "method": "alista",
    "problem": "lasso_m64_n128_p0.1_snr40",
    "num_layers": 16,
    "steps": 2000,
    "batch_size": 64,
    "num_test": 1000,
}
