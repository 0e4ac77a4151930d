"""biaswatch: the nightly master-bias service for observatory cameras."""

# The only place the version is written: pyproject.toml reads it from here at build
# time ([tool.setuptools.dynamic]), `biaswatch --version` and the report print it.
__version__ = "0.1.0"
