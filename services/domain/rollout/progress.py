"""Where a configuration's rollout stands, as operators read it: totals over the twins it targets
now, each stage's own share and counts, and the stage's state (waiting, active, paused, aborted,
done) — computed here, from the configuration and its counts, so every view says the same."""

from __future__ import annotations

from services.contracts.rollout import ConfigurationState, RolloutProgress, StageProgress
from services.domain.rollout.configuration import Configuration
from services.domain.rollout.membership import ConfigurationStats
from services.domain.rollout.planner import stage_targets


def stage_state(configuration: Configuration, index: int) -> str:
    """`done` for stages behind the current one (all once completed), the configuration's state for
    the current one, `waiting` for those ahead (and all of a draft's)."""
    if configuration.stage > index or configuration.state is ConfigurationState.COMPLETED:
        return "done"
    if configuration.stage == index and configuration.state is not ConfigurationState.DRAFT:
        return configuration.state.value
    return "waiting"


def rollout_progress(configuration: Configuration, stats: ConfigurationStats, complete: bool) -> RolloutProgress:
    """The progress view; `complete` tells whether `stats` cover the whole fleet yet."""
    total = stats.total()
    targets = stage_targets(configuration, stats.targeted)
    stages = [
        StageProgress(
            index=index,
            target=target - (targets[index - 1] if index else 0),
            admitted=(counts := stats.stage(index)).admitted,
            succeeded=counts.succeeded,
            failed=counts.failed,
            pending=counts.pending,
            superseded=counts.superseded,
            state=stage_state(configuration, index),
        )
        for index, target in enumerate(targets)
    ]
    return RolloutProgress(
        targeted=stats.targeted,
        waiting=stats.waiting,
        applied=total.admitted - total.superseded,
        succeeded=total.succeeded,
        failed=total.failed,
        pending=total.pending,
        superseded=total.superseded,
        rolled_back=total.rolled_back,
        custom={name: stats.metrics.get(name, 0) for name in configuration.spec.metrics},
        stages=stages,
        complete=complete,
    )
