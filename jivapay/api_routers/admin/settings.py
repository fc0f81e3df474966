"""Run-time settings on the admin server: list every declared key, set one (typed validation), and
return one to its default. Changes reach every process within the settings cache time."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from jivapay.api_routers.auth import require_permission
from jivapay.api_routers.deps import ClientIp, DbSession
from jivapay.api_routers.responses import problem_responses
from jivapay.api_routers.routing import LosslessJSONRouter
from jivapay.permissions import Permission
from jivapay.schemas.admin import SettingChanged, SettingRead, SettingUpdate
from jivapay.security import Principal
from jivapay.services import settings_admin

router = LosslessJSONRouter(prefix="/admin/settings", tags=["admin: configuration"])

CanView = Annotated[Principal, Depends(require_permission(Permission.SETTINGS_VIEW_ALL))]
CanEdit = Annotated[Principal, Depends(require_permission(Permission.SETTINGS_EDIT_ALL))]


@router.get("", response_model=list[SettingRead], responses=problem_responses(403))
def list_settings(session: DbSession, _: CanView) -> list[SettingRead]:
    """Every declared key: type, default, current value, description, who changed it and when."""
    return settings_admin.list_settings(session)


@router.put("/{key}", response_model=SettingChanged, responses=problem_responses(403, 404, 422))
def update_setting(
    key: str, body: SettingUpdate, session: DbSession, principal: CanEdit, ip: ClientIp
) -> SettingChanged:
    """Set a key's value, validated by its type; audited with the old and new values."""
    return settings_admin.update_setting(
        session, key=key, value=body.value, actor_user_id=principal.user_id, ip_address=ip
    )


@router.delete("/{key}", response_model=SettingChanged, responses=problem_responses(403, 404))
def reset_setting(key: str, session: DbSession, principal: CanEdit, ip: ClientIp) -> SettingChanged:
    """Return a key to its declared default; audited."""
    return settings_admin.reset_setting(
        session, key=key, actor_user_id=principal.user_id, ip_address=ip
    )
