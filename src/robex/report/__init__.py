"""The cross-stage report: every table of the four works, ours beside the paper's.

``build`` (assembly), one module per section: ``models`` (train), ``attack``, ``lrp``, ``explain``,
``verify``; ``document`` (Section, Report), ``tables`` / ``figures`` (shared helpers).
"""
