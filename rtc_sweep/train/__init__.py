"""Training of the policies rtc_sweep evaluates: ``python -m rtc_sweep.train task=<task> level=... model=...``.

The shipped policies: demonstrations from open-loop plans (``plan``; several merged into a multimodal dataset,
``mix``; with ``feedback_dims`` a plan continued as a controller that reacts to the state), flow BC on them
(``flow``) and its training-time RTC fine-tune (``flow_tt``), polished by success-filtered self-imitation
(``self_imitation``), DAgger with the planner as the expert (``dagger``) or with a feedback plan as the expert
(``relabel``).
The benchmark's route: expert PPO (``ppo``), demonstrations from the best experts (``collect``), flow BC. They
share the flow trainer (``flow_bc``) and the rollouts (``rollout``).

Each task's config is its module's frozen dataclass (``PlanConfig`` in ``plan.py``, ...): ``config`` makes the
Hydra schema of ``task=<task>`` from it and converts and checks the composed config into it, once. The app's tree
is ``rtc_sweep/train/conf/``; its ``level`` and ``model`` groups are the evaluation tree's (``config``).
"""
