"""Amortized solvers and unrolled L2O for problem families (``tasks.problems``).

* ``solvers``: ISTA, FISTA, native (e.g. Sinkhorn) iterations, reference solutions,
  NMSE in dB.
* ``lista``: LISTA, LISTA-CP and ALISTA (analytic weight in closed form) for sparse
  coding.
* ``amortize``: fully / semi-amortized MLP solvers with regression or objective loss.
* ``unroll``: truncated-backprop meta-training of a learned optimizer (``math_l2o``)
  on composite problems.
* ``experiment``: train / save / evaluate / table / plot, used by
  ``metaopt amortized``.
"""

from metaopt.amortized import amortize, lista, solvers, unroll  # noqa: F401
