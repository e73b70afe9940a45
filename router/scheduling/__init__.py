"""Choosing the replica inside a pool: filters, scorers in [0, 1] with weights, a picker.

The same code serves the router on a live fleet and `switchpoint bench scheduling` on the
simulated one; the baselines it is measured against (round robin, random, least request,
the Gateway API Inference Extension's default profile) are profiles of it too.
"""
