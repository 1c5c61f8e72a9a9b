"""The coordinator of share groups' membership (KIP-932): the KIP-848 coordinator
(broker.groups.consumer_coordinator) with the share heartbeat as its pure core, its
records under their own key in `__consumer_offsets`, and the share group describe."""

from __future__ import annotations

import uuid
from collections.abc import MutableMapping

from broker.groups.consumer_coordinator import ConsumerGroups, Persist
from broker.groups.consumer_group import ConsumerSettings
from broker.groups.group_configs import (
    SHARE_DELIVERY_LIMIT,
    SHARE_HEARTBEAT,
    SHARE_LOCK,
    SHARE_MAX_LOCKS,
    SHARE_SESSION,
)
from broker.groups.share_group import share_heartbeat
from broker.groups.share_state import ShareDefaults
from protocol.errors import ErrorCode


class ShareGroups(ConsumerGroups):
    kind = "share"
    apply_heartbeat = staticmethod(share_heartbeat)

    def __init__(
        self,
        settings: ConsumerSettings,
        persist: Persist,
        stored: MutableMapping[str, dict],
        defaults: ShareDefaults,
    ) -> None:
        super().__init__(settings, persist, stored)
        self.defaults = defaults

    def describe(self, group_id: str, names: dict[uuid.UUID, str]) -> dict:
        group = self.group(group_id)
        if group is None:
            return {
                "error_code": ErrorCode.group_id_not_found,
                "error_message": f"Group {group_id} not found.",
                "group_id": group_id,
                "group_state": "Dead",
                "group_epoch": -1,
                "assignment_epoch": -1,
                "assignor_name": "",
                "members": [],
            }
        return {
            "error_code": ErrorCode.none,
            "error_message": None,
            "group_id": group_id,
            "group_state": group.state_name,
            "group_epoch": group.group_epoch,
            "assignment_epoch": group.assignment_epoch,
            "assignor_name": "simple",
            "members": [
                {
                    "member_id": m.member_id,
                    "rack_id": m.rack_id,
                    "member_epoch": m.epoch,
                    "client_id": m.client_id,
                    "client_host": m.client_host,
                    "subscribed_topic_names": list(m.topic_names),
                    "assignment": {
                        "topic_partitions": [
                            {
                                "topic_id": t,
                                "topic_name": names.get(t, ""),
                                "partitions": sorted(ps),
                            }
                            for t, ps in sorted(m.state.assigned.items())
                        ]
                    },
                }
                for m in group.members.values()
            ],
        }

    def describe_classic(self, group_id: str) -> dict:
        out = super().describe_classic(group_id)
        return {**out, "protocol_type": "share", "protocol_data": "simple"}

    def config_defaults(self) -> dict[str, int]:
        d = self.defaults
        return {
            SHARE_HEARTBEAT: self.settings.heartbeat_interval_ms,
            SHARE_SESSION: self.settings.session_timeout_ms,
            SHARE_LOCK: d.record_lock_duration_ms,
            SHARE_DELIVERY_LIMIT: d.delivery_count_limit,
            SHARE_MAX_LOCKS: d.max_record_locks,
        }
