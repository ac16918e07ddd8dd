"""Meta-training: inner unrolls, truncation schedules, gradient estimators, the outer
loop with checkpoints and device sharding.

``metaopt.meta.meta_train(config)`` runs a ``MetaTrainConfig``; the command line is
``metaopt meta-train configs/<experiment>.py``.
"""

from metaopt.meta.config import (EstimatorConfig, EvalConfig, MetaTrainConfig, OuterConfig,
                                 RunConfig, ScheduleConfig, apply_overrides, from_dict,
                                 load_config)
from metaopt.meta.estimators import (ESTIMATORS, PES, FullES, GradientEstimator, MixedEstimator,
                                     TruncatedBackprop, TruncatedES, build_estimator)
from metaopt.meta.trainer import MetaTrainer, MetaTrainResult, MetaState, meta_train
from metaopt.meta.truncation import SCHEDULES, TruncationSchedule
from metaopt.meta.unroll import META_LOSSES, InnerProblem, InnerState, train_curve

__all__ = [
    "ESTIMATORS", "META_LOSSES", "PES", "SCHEDULES", "EstimatorConfig", "EvalConfig", "FullES",
    "GradientEstimator", "InnerProblem", "InnerState", "MetaState", "MetaTrainConfig",
    "MetaTrainResult", "MetaTrainer", "MixedEstimator", "OuterConfig", "RunConfig",
    "ScheduleConfig", "TruncatedBackprop", "TruncatedES",
    "TruncationSchedule", "apply_overrides", "build_estimator", "from_dict", "load_config",
    "meta_train", "train_curve",
]
