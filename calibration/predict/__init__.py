"""From a model to a latency: trace it, cost each kernel, match fusion patterns, plan the
partition (:func:`calibration.predict.plan.partition`) and price it from a profile
(:mod:`calibration.predict.mapper`)."""
