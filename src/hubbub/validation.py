"""Name rules shared by the REST API and client requests (spec §3, §8)."""

from __future__ import annotations

import re

from hubbub.errors import BadRequest

__all__ = ["check_connection_id", "check_group", "check_hub", "check_user_id"]

_HUB = re.compile(r"[A-Za-z][A-Za-z0-9_`,.\[\]]{0,127}")
MAX_GROUP_LENGTH = 1024


def check_hub(hub: str) -> str:
    if not _HUB.fullmatch(hub):
        raise BadRequest(
            f"Invalid hub name '{hub[:140]}': it must start with a letter and contain only letters, "
            "digits, '_', '`', ',', '.', '[' and ']' (1-128 characters)."
        )
    return hub


def check_group(group: str) -> str:
    if not group or len(group) > MAX_GROUP_LENGTH or group.isspace():
        raise BadRequest("Invalid group name: it must be 1-1024 characters and not only whitespace.")
    return group


def check_user_id(user_id: str) -> str:
    if not user_id:
        raise BadRequest("The user id must not be empty.")
    return user_id


def check_connection_id(connection_id: str) -> str:
    if not connection_id:
        raise BadRequest("The connection id must not be empty.")
    return connection_id
