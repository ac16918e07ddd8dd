"""Imports every task module so that its registrations run."""
from tasks import problems  # noqa: F401
from tasks import sparse  # noqa: F401
from tasks import mlp  # noqa: F401
from tasks import quadratic  # noqa: F401
from tasks import classic  # noqa: F401
from tasks import logistic  # noqa: F401
from tasks import conv  # noqa: F401
from tasks import transformer  # noqa: F401
from tasks import resnet  # noqa: F401
from tasks import autoencoder  # noqa: F401
