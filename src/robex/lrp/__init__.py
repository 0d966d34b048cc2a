"""Layer-wise relevance propagation (zennit) and the LRP study of paper 001.

``relevance`` (attribution front-end), ``statistics`` (streamed quantiles), ``ranking``
(rank shifts), ``study`` (the study's steps), ``tables`` (its tables and figures).
"""
