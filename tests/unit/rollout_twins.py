"""A twin as the twin-store keeps it, for the rollout's pure tests: configurations compiled in one
line, and a document the planner's writes are applied to."""

from __future__ import annotations

from typing import Any

from services.contracts.rollout import ConfigurationSpec, ConfigurationState, RolloutPolicy
from services.domain.rollout.configuration import CompiledConfiguration, Configuration
from services.domain.rollout.twin_plan import TwinFacts, TwinWrite, evaluate_twin, plan_twin
from services.domain.twin.merge import merge_patch

NOW = 1_700_000_000


def config(
    cid: str,
    content: dict[str, Any],
    *,
    target: str = "true",
    priority: int = 0,
    created: int = 1,
    state: ConfigurationState = ConfigurationState.ACTIVE,
    rollback: dict[str, Any] | None = None,
    timeout: int | None = None,
    success: str | None = None,
    **policy: Any,
) -> CompiledConfiguration:
    spec = ConfigurationSpec(
        id=cid,
        target_condition=target,
        priority=priority,
        content=content,
        rollout=RolloutPolicy(
            rollback_content=rollback, device_timeout_seconds=timeout, success_condition=success, **policy
        ),
    )
    return CompiledConfiguration(
        Configuration(spec=spec, state=state, created_at=created, rollback=rollback is not None)
    )


class Twin:
    """A twin as the twin-store keeps it, enough to apply the planner's writes."""

    def __init__(self, device_id: str = "d1", tags: dict[str, Any] | None = None) -> None:
        self.device_id = device_id
        self.version = 1
        self.tags = tags or {}
        self.desired: dict[str, Any] = {}
        self.reported: dict[str, Any] = {}
        self.configurations: dict[str, Any] = {}

    def facts(self, configurations: dict[str, CompiledConfiguration]) -> TwinFacts:
        return evaluate_twin(
            self.device_id,
            self.version,
            self.tags,
            self.desired,
            self.reported,
            self.configurations,
            list(configurations.values()),
        )

    def apply(self, write: TwinWrite) -> None:
        assert write.expected_version == self.version
        self.desired = merge_patch(self.desired, write.desired)
        self.configurations = merge_patch(self.configurations, write.configurations)
        self.version += 1

    def converge(self, configurations: dict[str, CompiledConfiguration], admit: dict[str, int], now: int = NOW) -> int:
        """Plan and apply until nothing is left to do; returns how many writes it took."""
        writes = 0
        while (write := plan_twin(self.facts(configurations), configurations, admit, now)) is not None:
            self.apply(write)
            writes += 1
            assert writes < 5, "planning does not converge"
        return writes
