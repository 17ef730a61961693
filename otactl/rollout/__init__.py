"""Pure rollout core: canary plans, ring assignment, health gates and rollout decisions.

No I/O and no clock reads here: callers parse files through :func:`plan.load_plan` (the one edge),
pass telemetry counts in, and pass ``now`` as an argument.
"""
