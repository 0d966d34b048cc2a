"""The cross-stage report: every table of the four works, ours beside the paper's."""
