"""The seven stages, one module each: ``run(cfg) -> metrics`` plus a thin ``@hydra.main``.

``python -m robex.<stage>`` runs :func:`robex.stages.<stage>.main`. Stages are the edge of the
project: they read the Hydra config, call library functions with tensors and plain arguments,
and log to MLflow / write DVC outputs. Algorithms live in the capability packages.
"""
