"""LOTS visualisations against CAM methods, with the XAI metrics (Weber 2023).

``lots`` (Algorithm 1 and the step rules), ``visualize.lots_activation_map`` (Algorithm 2),
``cam`` (CAM baselines), ``layers`` (module addressing and the CAM-layer rule), ``metrics``
(Sect. 3.3), ``evaluate`` (the Sect. 5.1 protocol), ``methods`` (build and score each compared
method), ``study`` (one backbone's Tables 5.1-5.3 rows and figures), ``targets`` (LOTS target
banks), ``data`` (image subsets), ``tables`` / ``figures``; ``python -m robex.explain`` is the
thin Hydra stage (:mod:`robex.stages.explain`). Import from the defining modules: this package
imports nothing eagerly.
"""
