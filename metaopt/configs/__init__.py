"""The shipped experiment configs, one file per experiment (executed Python).

Address one by name (``metaopt meta-train general_v2``, ``metaopt amortized train
--config amortized_lista``) or by path (``configs/general_v2.py``; ``configs/`` at the
repository root links here); ``metaopt.typed_config.resolve_config`` resolves both.
"""
