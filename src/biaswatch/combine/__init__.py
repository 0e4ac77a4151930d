"""Stacks to masters: the engine, the compiled kernel, the child process, executors, Dask."""
