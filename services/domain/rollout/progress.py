"""Where a configuration's rollout stands, as operators read it: totals over the twins it targets
now, each stage's own share and counts, and the stage's state (waiting, active, soaking, paused,
aborted, done) — computed here, from the configuration and its counts, so every view says the same."""

from __future__ import annotations

from services.contracts.rollout import ConfigurationState, RolloutProgress, StageProgress
from services.domain.rollout.configuration import Configuration
from services.domain.rollout.membership import ConfigurationStats
from services.domain.rollout.planner import rate_per_minute, stage_targets
from services.domain.software.twin_key import UpdateStatus


def stage_state(configuration: Configuration, index: int) -> str:
    """`done` for stages behind the current one (all once completed), the configuration's state for
    the current one (`soaking` while an active stage's health soak runs), `waiting` for those ahead
    (and all of a draft's)."""
    if configuration.stage > index or configuration.state is ConfigurationState.COMPLETED:
        return "done"
    if configuration.stage == index and configuration.state is not ConfigurationState.DRAFT:
        if configuration.state is ConfigurationState.ACTIVE and configuration.soak_since is not None:
            return "soaking"
        return configuration.state.value
    return "waiting"


def rollout_progress(
    configuration: Configuration, stats: ConfigurationStats, complete: bool, outside_window: int = 0
) -> RolloutProgress:
    """The progress view; `complete` tells whether `stats` cover the whole fleet yet;
    `outside_window` waiting twins are not admissible now (the reconciler's last round)."""
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
            retrying=counts.retrying,
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
        retrying=total.retrying,
        superseded=total.superseded,
        rolled_back=total.rolled_back,
        quarantined=stats.quarantined,
        outside_window=outside_window,
        awaiting_consent=stats.phases.get(UpdateStatus.WAITING_FOR_CONSENT.value, 0),
        awaiting_install=stats.phases.get(UpdateStatus.WAITING_FOR_INSTALL.value, 0),
        installed=stats.installed,
        attempts=stats.attempts,
        custom={name: stats.metrics.get(name, 0) for name in configuration.spec.metrics},
        stages=stages,
        complete=complete,
        rate_per_minute=rate_per_minute(configuration.spec.rollout, total.succeeded),
    )
