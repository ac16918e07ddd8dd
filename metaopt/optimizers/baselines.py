"""The baseline optimizers: thin builders over optax / optax.contrib.

Defaults follow each paper / optax unless noted; search spaces are log-uniform in the
learning rate (about four decades around the usual values) plus the one or two
hyper-parameters that matter most for the method.

AlgoPerf's baselines (``momentum``, ``adam``, ``adamw``, ``nadamw``) search the same
schedule family (``SCHEDULE_SPACE``: warm-up fraction and decay; see
``metaopt.optimizers.registry``) and AlgoPerf's axes: learning rate log-uniform,
``1 - beta1`` log-uniform (``OneMinusLogUniform``), ``beta2``, weight decay
log-uniform. Their defaults keep a constant learning rate, except ``nadamw``, whose
default is AlgoPerf's baseline schedule (5% linear warm-up, then cosine decay to 0;
it needs ``total_steps``).
"""

from __future__ import annotations

import jax
import optax
from optax import contrib

from metaopt.optimizers.registry import DECAYS, BaselineSpec, register
from metaopt.optimizers.space import Choice, LogUniform, OneMinusLogUniform, Uniform


def _sgd(learning_rate):
  return optax.sgd(learning_rate)


def _momentum(learning_rate, momentum, weight_decay):
  # AlgoPerf's SGD-momentum baseline: L2 weight decay added to the gradient.
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum))


def _nesterov(learning_rate, momentum):
  return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


def _adam(learning_rate, b1, b2, eps):
  return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


def _adamw(learning_rate, b1, b2, eps, weight_decay):
  return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def _nadamw(learning_rate, b1, b2, eps, weight_decay):
  return optax.nadamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def _lion(learning_rate, b1, b2, weight_decay):
  return optax.lion(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)


def _adafactor(learning_rate, decay_rate, clipping_threshold, momentum,
               multiply_by_parameter_scale, min_dim_size_to_factor):
  return optax.adafactor(learning_rate, decay_rate=decay_rate,
                         clipping_threshold=clipping_threshold, momentum=momentum,
                         multiply_by_parameter_scale=multiply_by_parameter_scale,
                         min_dim_size_to_factor=min_dim_size_to_factor)


def _rmsprop(learning_rate, decay, eps, momentum):
  return optax.rmsprop(learning_rate, decay=decay, eps=eps, momentum=momentum)


def _adagrad(learning_rate, initial_accumulator_value, eps):
  return optax.adagrad(learning_rate, initial_accumulator_value=initial_accumulator_value,
                       eps=eps)


def _lamb(learning_rate, b1, b2, eps, weight_decay):
  return optax.lamb(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def _sophia(learning_rate, b1, b2, gamma, weight_decay, clip_threshold, update_interval,
            hutchinson_seed):
  # Sophia-H: the Hutchinson estimator needs ``obj_fn`` (params -> loss on the current
  # batch), which every loop of ``metaopt.inner`` passes.
  return contrib.sophia(
      learning_rate, b1=b1, b2=b2, gamma=gamma, weight_decay=weight_decay,
      clip_threshold=clip_threshold, update_interval=update_interval,
      hessian_diagonal_fn=contrib.hutchinson_estimator_diag_hessian(
          jax.random.PRNGKey(hutchinson_seed)))


def _muon(learning_rate, beta, ns_steps, nesterov, weight_decay, adam_b1, adam_b2):
  # 2-D weights get the orthogonalised (Newton-Schulz) momentum; every other tensor
  # (biases, scalars, conv kernels) falls back to Adam at the same learning rate.
  return contrib.muon(learning_rate, beta=beta, ns_steps=ns_steps, nesterov=nesterov,
                      weight_decay=weight_decay, adam_b1=adam_b1, adam_b2=adam_b2)


def _schedule_free_adamw(learning_rate, warmup_steps, b1, b2, weight_decay):
  return contrib.schedule_free_adamw(learning_rate, warmup_steps=warmup_steps or None,
                                     b1=b1, b2=b2, weight_decay=weight_decay)


def _prodigy(learning_rate, b1, b2, d0, weight_decay):
  return contrib.prodigy(learning_rate, betas=(b1, b2), estim_lr0=d0,
                         weight_decay=weight_decay)


_LR_WIDE = LogUniform(1e-5, 1.0)
#: ``1 - beta1`` log-uniform on [0.01, 0.5]: beta1 in [0.5, 0.99] (AlgoPerf's axis).
_BETA1 = OneMinusLogUniform(1e-2, 0.5)
_BETA2 = Choice([0.99, 0.999])
#: The schedule family searched by AlgoPerf's baselines: linear warm-up over a fraction
#: of the run, then constant / cosine / linear decay (``registry.warmup_decay_schedule``).
SCHEDULE_SPACE = {"warmup_fraction": Uniform(0.0, 0.1), "lr_decay": Choice(DECAYS)}
#: Constant learning rate: the schedule family's defaults of all but nadamw.
_CONSTANT = {"warmup_fraction": 0.0, "lr_decay": "constant"}

register(BaselineSpec(
    "sgd", _sgd, {"learning_rate": 0.1}, {"learning_rate": LogUniform(1e-4, 10.0)},
    description="plain stochastic gradient descent"))
register(BaselineSpec(
    "momentum", _momentum,
    {"learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.0, **_CONSTANT},
    {"learning_rate": LogUniform(1e-4, 3.0), "momentum": _BETA1,
     "weight_decay": LogUniform(1e-6, 1e-2), **SCHEDULE_SPACE},
    description="SGD with heavy-ball momentum and L2 weight decay (AlgoPerf's baseline)"))
register(BaselineSpec(
    "nesterov", _nesterov, {"learning_rate": 0.01, "momentum": 0.9},
    {"learning_rate": LogUniform(1e-4, 3.0), "momentum": Uniform(0.5, 0.99)},
    description="SGD with Nesterov momentum"))
register(BaselineSpec(
    "adam", _adam,
    {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, **_CONSTANT},
    {"learning_rate": _LR_WIDE, "b1": _BETA1, "b2": _BETA2, **SCHEDULE_SPACE},
    description="Adam (Kingma & Ba 2015)"))
register(BaselineSpec(
    "adamw", _adamw,
    {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 1e-4,
     **_CONSTANT},
    {"learning_rate": _LR_WIDE, "b1": _BETA1, "b2": _BETA2,
     "weight_decay": LogUniform(1e-6, 1.0), **SCHEDULE_SPACE},
    description="Adam with decoupled weight decay (Loshchilov & Hutter 2019)"))
register(BaselineSpec(
    "nadamw", _nadamw,
    {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 1e-4,
     "warmup_fraction": 0.05, "lr_decay": "cosine"},
    {"learning_rate": _LR_WIDE, "b1": _BETA1, "b2": _BETA2,
     "weight_decay": LogUniform(1e-6, 1.0), **SCHEDULE_SPACE},
    description="NAdamW, Nesterov Adam with decoupled weight decay, warm-up + cosine "
                "decay (AlgoPerf's baseline; Dozat 2016)"))
register(BaselineSpec(
    "lion", _lion, {"learning_rate": 1e-4, "b1": 0.9, "b2": 0.99, "weight_decay": 1e-3},
    {"learning_rate": LogUniform(1e-6, 1e-1), "b1": Uniform(0.8, 0.95),
     "weight_decay": LogUniform(1e-5, 1e-1)},
    description="Lion, sign of interpolated momentum (Chen et al. 2023)"))
register(BaselineSpec(
    "adafactor", _adafactor,
    {"learning_rate": 1e-2, "decay_rate": 0.8, "clipping_threshold": 1.0, "momentum": None,
     "multiply_by_parameter_scale": True, "min_dim_size_to_factor": 128},
    {"learning_rate": LogUniform(1e-4, 1.0), "momentum": Choice([None, 0.9])},
    description="Adafactor, factored second moments (Shazeer & Stern 2018)"))
register(BaselineSpec(
    "rmsprop", _rmsprop, {"learning_rate": 1e-3, "decay": 0.9, "eps": 1e-8, "momentum": None},
    {"learning_rate": _LR_WIDE, "decay": Uniform(0.8, 0.999)},
    description="RMSProp (Tieleman & Hinton 2012)"))
register(BaselineSpec(
    "adagrad", _adagrad,
    {"learning_rate": 1e-2, "initial_accumulator_value": 0.1, "eps": 1e-7},
    {"learning_rate": LogUniform(1e-4, 10.0)},
    description="Adagrad (Duchi et al. 2011)"))
register(BaselineSpec(
    "lamb", _lamb, {"learning_rate": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-6,
                    "weight_decay": 0.0},
    {"learning_rate": _LR_WIDE, "b1": Uniform(0.5, 0.95)},
    description="LAMB, layer-wise trust ratio on Adam (You et al. 2020)"))
register(BaselineSpec(
    "sophia", _sophia,
    {"learning_rate": 1e-3, "b1": 0.965, "b2": 0.99, "gamma": 0.01, "weight_decay": 1e-4,
     "clip_threshold": 1.0, "update_interval": 10, "hutchinson_seed": 0},
    {"learning_rate": LogUniform(1e-5, 1e-1), "gamma": LogUniform(1e-3, 1.0)},
    description="Sophia-H, clipped diagonal-Hessian preconditioning (Liu et al. 2023)"))
register(BaselineSpec(
    "muon", _muon,
    {"learning_rate": 0.02, "beta": 0.95, "ns_steps": 5, "nesterov": True,
     "weight_decay": 0.0, "adam_b1": 0.9, "adam_b2": 0.999},
    {"learning_rate": LogUniform(1e-4, 1.0), "beta": Uniform(0.8, 0.99)},
    description="Muon, Newton-Schulz orthogonalised momentum on matrices (Jordan et al. 2024)"))
register(BaselineSpec(
    "schedule_free_adamw", _schedule_free_adamw,
    {"learning_rate": 2.5e-3, "warmup_steps": 0, "b1": 0.9, "b2": 0.999,
     "weight_decay": 0.0},
    {"learning_rate": _LR_WIDE, "b1": Uniform(0.8, 0.99),
     "weight_decay": Choice([0.0, 1e-4, 1e-2])},
    description="Schedule-free AdamW, iterate averaging instead of a schedule "
                "(Defazio et al. 2024)",
    schedulable=False))
register(BaselineSpec(
    "prodigy", _prodigy,
    {"learning_rate": 1.0, "b1": 0.9, "b2": 0.999, "d0": 1e-6, "weight_decay": 0.0},
    {"learning_rate": LogUniform(0.1, 10.0)},
    self_tuning=True,
    description="Prodigy, learning-rate-free Adam (Mishchenko & Defazio 2024)"))


# The self-tuning field (AlgoPerf's self-tuning ruleset: one run, no per-task settings).
# The learning-rate-free methods of optax.contrib run at their published defaults.

def _dadapt_adamw(learning_rate, b1, b2, weight_decay):
  return contrib.dadapt_adamw(learning_rate, betas=(b1, b2), weight_decay=weight_decay)


def _dog(learning_rate, reps_rel):
  # The first step moves ``reps_rel * (1 + |x_0|)`` (the paper's r_eps rule).
  return contrib.dog(learning_rate, init_step=("heuristic", reps_rel))


def _dowg(learning_rate):
  return contrib.dowg(learning_rate)


def _mechanic(learning_rate, base_learning_rate):
  # Mechanic learns the scale of a base optimizer's updates (Cutkosky et al. 2023):
  # here Adam at its usual step; ``learning_rate`` multiplies the result (1 = as
  # published).
  return optax.chain(contrib.mechanize(optax.adam(base_learning_rate)),
                     optax.scale(learning_rate))


def _cocob(learning_rate, alpha):
  return contrib.cocob(learning_rate, alpha=alpha)


register(BaselineSpec(
    "nadamw_self_tuning", _nadamw,
    # AlgoPerf's self-tuning NAdamW baseline: its one fixed config (lr 1.75e-3,
    # 1 - beta1 = 0.0673, beta2 0.9955, weight decay 0.0812, 2% warm-up, cosine to 0).
    {"learning_rate": 0.0017486387539278373, "b1": 1 - 0.06733926164,
     "b2": 0.9955159689799007, "eps": 1e-8, "weight_decay": 0.08121616522670176,
     "warmup_fraction": 0.02, "lr_decay": "cosine"},
    {"learning_rate": _LR_WIDE},
    self_tuning=True,
    description="NAdamW at AlgoPerf's self-tuning baseline settings (one config for every "
                "workload)"))
register(BaselineSpec(
    "dadapt_adamw", _dadapt_adamw,
    {"learning_rate": 1.0, "b1": 0.9, "b2": 0.999, "weight_decay": 0.0},
    {"learning_rate": LogUniform(0.1, 10.0)}, self_tuning=True, schedulable=False,
    description="D-Adaptation AdamW, learning-rate-free (Defazio & Mishchenko 2023)"))
register(BaselineSpec(
    "dog", _dog, {"learning_rate": 1.0, "reps_rel": 1e-6},
    {"learning_rate": LogUniform(0.1, 10.0)}, self_tuning=True, schedulable=False,
    description="DoG, distance-over-gradients step size (Ivgi et al. 2023)"))
register(BaselineSpec(
    "dowg", _dowg, {"learning_rate": 1.0},
    {"learning_rate": LogUniform(0.1, 10.0)}, self_tuning=True, schedulable=False,
    description="DoWG, distance-over-weighted-gradients step size (Khaled et al. 2023)"))
register(BaselineSpec(
    "mechanic", _mechanic, {"learning_rate": 1.0, "base_learning_rate": 1e-3},
    {"learning_rate": LogUniform(0.1, 10.0)}, self_tuning=True, schedulable=False,
    description="Mechanic, a learned scale over Adam's updates (Cutkosky et al. 2023)"))
register(BaselineSpec(
    "cocob", _cocob, {"learning_rate": 1.0, "alpha": 100.0},
    {"learning_rate": LogUniform(0.1, 10.0)}, self_tuning=True, schedulable=False,
    description="COCOB-Backprop, coin-betting without a learning rate (Orabona & Tommasi 2017)"))
