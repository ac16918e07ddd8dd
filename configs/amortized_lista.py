"""LISTA (untied, K=16) on the CPU-sized LASSO problem; `metaopt amortized train
--config configs/amortized_lista.py --out runs/lista`. Use method "lista_cp" or
"alista" for the other variants, problem "lasso_m250_n500_p0.1_snr40" for the
classic size."""

CONFIG = {
    "method": "lista",
    "problem": "lasso_m64_n128_p0.1_snr40",
    "num_layers": 16,
    "steps": 2000,
    "batch_size": 64,
    "num_test": 1000,
}
