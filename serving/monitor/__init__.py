"""Model-risk monitoring of live decisions: every row of the model report's monitoring plan.

``duanka monitor`` (and a ``/monitor`` page or a metrics exporter) calls
:func:`~duanka.serving.monitor.engine.run_monitoring`: it counts the decision record's new
decisions into a sidecar of counts (:mod:`~duanka.serving.monitor.sidecar`,
:mod:`~duanka.serving.monitor.refresh`), then computes each row of the plan with its trigger
(``plan_*`` modules) from those counts, the labels and each model's reference
(:mod:`~duanka.serving.monitor.baselines`); :mod:`~duanka.serving.monitor.render` writes the page.
The maths is :mod:`duanka.training.monitoring`'s, shared with the model report and the backtest.
"""
