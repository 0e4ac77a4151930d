"""biaswatch: the nightly master-bias service for observatory cameras."""

__version__ = "0.1.0"
