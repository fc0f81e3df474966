"""Administration of user accounts: creating users of every role with their
profile, listing and reading them, profile edits, activation, password resets and changes, grants
and counts.

Who may act on whom: creating, editing or resetting a user of role R needs `users:manage:R`;
(de)activating needs `users:deactivate:all`, plus `users:manage:admin` when the target is an admin.
No one grants what they do not hold. The platform never loses its last active holder of `superuser`
(or `*`): deactivating, anonymising or stripping that holder is a 409, decided under one advisory
lock so two admins cannot remove each other at the same moment. Every change is audited.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session, joinedload

from jivapay.database.models import (
    Admin,
    Merchant,
    Support,
    TeamLead,
    TimeZone,
    Trader,
    TraderCommission,
    User,
)
from jivapay.enums import Role
from jivapay.permissions import (
    SUPERUSER,
    WILDCARD,
    Permission,
    ensure_permission,
    template_permissions,
    validate_grants,
)
from jivapay.schemas.admin import (
    GrantsRead,
    UserChanged,
    UserCreate,
    UserDetailRead,
    UserRead,
    UserStatsRead,
    UserUpdate,
)
from jivapay.schemas.common import Page
from jivapay.security import (
    STAFF_ROLES,
    Principal,
    hash_password,
    revoke_tokens,
    verify_password,
)
from jivapay.services import auth_service, permission_service
from jivapay.services.audit_logger import log_event
from jivapay.utils.exceptions import Conflict, NotFound, ValidationFailed

# One lock for every change that could remove a superuser (transaction-scoped, released at commit).
_SUPERUSER_LOCK_KEY = 0x4A495641_0001

_ROLE_FIELDS: dict[Role, frozenset[str]] = {
    Role.MERCHANT: frozenset({"company_name"}),
    Role.TRADER: frozenset(
        {"team_lead_id", "pay_in", "pay_out", "trafic_priority", "time_zone_id", "commission"}
    ),
    Role.ADMIN: frozenset({"template", "permissions"}),
    Role.SUPPORT: frozenset({"template", "permissions", "role_description"}),
    Role.TEAMLEAD: frozenset({"template", "permissions"}),
}
_UPDATE_FIELDS: dict[Role, frozenset[str]] = {
    Role.MERCHANT: frozenset({"first_name", "last_name", "company_name", "is_verified"}),
    Role.TRADER: frozenset({"first_name", "last_name"}),
    Role.ADMIN: frozenset({"first_name", "last_name"}),
    Role.SUPPORT: frozenset({"first_name", "last_name", "role_description"}),
    Role.TEAMLEAD: frozenset({"first_name", "last_name"}),
}
_ROLE_ONLY_FIELDS = frozenset().union(*_ROLE_FIELDS.values())
_PROFILE_COLUMNS_HIDDEN = frozenset({"user_id", "granted_permissions"})


# --------------------------------------------------------------------------- helpers


def is_superuser_grant(grant: str) -> bool:
    """Whether a grant covers everything (`superuser`, `*`, or only `*` segments)."""
    return grant in (SUPERUSER, WILDCARD) or all(s == WILDCARD for s in grant.split(":"))


def profile_of(user: User) -> Any:
    """The user's role profile row (None if missing)."""
    return getattr(user, Role(user.role).value)


def load_user(session: Session, user_id: int, *, for_update: bool = False) -> User:
    """A user with its profile loaded; `NotFound` when it does not exist."""
    stmt = (
        select(User)
        .where(User.id == user_id)
        .options(
            joinedload(User.admin),
            joinedload(User.support),
            joinedload(User.teamlead),
            joinedload(User.merchant),
            joinedload(User.trader),
        )
    )
    if for_update:
        # NO KEY UPDATE: rows that merely reference the user (an audit row naming it as actor)
        # take KEY SHARE for their foreign key and must not wait for, or deadlock with, this lock.
        stmt = stmt.with_for_update(of=User, key_share=True)  # FOR NO KEY UPDATE
    user = session.scalars(stmt).unique().one_or_none()
    if user is None:
        raise NotFound("User not found")
    return user


def user_grants(user: User) -> list[str]:
    """A staff user's grants (none for merchants and traders)."""
    if Role(user.role) not in STAFF_ROLES:
        return []
    profile = profile_of(user)
    return [str(p) for p in (profile.granted_permissions or [])] if profile is not None else []


def user_read(user: User) -> UserRead:
    """The list shape of a user."""
    profile = profile_of(user)
    return UserRead(
        id=user.id,
        email=user.email,
        role=Role(user.role),
        is_active=user.is_active,
        first_name=getattr(profile, "first_name", None),
        last_name=getattr(profile, "last_name", None),
        profile_id=getattr(profile, "id", None),
        created_at=user.created_at,
        last_login_at=user.last_login_at,
        anonymized_at=user.anonymized_at,
    )


def _profile_dict(profile: Any) -> dict[str, Any]:
    if profile is None:
        return {}
    return {
        column.key: getattr(profile, column.key)
        for column in profile.__table__.columns
        if column.key not in _PROFILE_COLUMNS_HIDDEN
    }


def user_detail(session: Session, user: User) -> UserDetailRead:
    """The detail shape of a user: profile fields and grants (plus the trader's commission)."""
    profile = profile_of(user)
    data = _profile_dict(profile)
    if isinstance(profile, Trader):
        row = session.scalars(
            select(TraderCommission)
            .where(TraderCommission.trader_id == profile.id)
            .order_by(TraderCommission.created_at.desc(), TraderCommission.id.desc())
        ).first()
        data["commission"] = (
            None
            if row is None
            else {"payin_percent": row.commission_payin, "payout_percent": row.commission_payout}
        )
    return UserDetailRead(
        **user_read(user).model_dump(), profile=data, permissions=user_grants(user)
    )


def lock_superusers(session: Session) -> None:
    """Serialise every change that could remove a superuser (held until the transaction ends)."""
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SUPERUSER_LOCK_KEY})


def _other_active_superusers(session: Session, user_id: int) -> int:
    count = 0
    for model in (Admin, Support, TeamLead):
        rows = session.execute(
            select(model.granted_permissions)
            .join(User, User.id == model.user_id)
            .where(User.is_active.is_(True), User.id != user_id)
        ).scalars()
        count += sum(1 for grants in rows if any(is_superuser_grant(str(g)) for g in grants or []))
    return count


def ensure_not_last_superuser(session: Session, user: User, *, remaining: Iterable[str]) -> None:
    """409 when `user` is an active superuser, keeps none of it (`remaining`), and is the last one.

    Takes the superuser advisory lock first; the caller's transaction holds it until commit.
    """
    if not user.is_active or not any(is_superuser_grant(g) for g in user_grants(user)):
        return
    if any(is_superuser_grant(g) for g in remaining):
        return
    lock_superusers(session)
    if _other_active_superusers(session, user.id) == 0:
        raise Conflict(
            "This is the last active superuser; grant superuser to someone else first",
            code="last_superuser",
        )


def _ensure_may_manage(actor: Principal, role: Role) -> None:
    ensure_permission(actor, f"users:manage:{Role(role).value}")


# --------------------------------------------------------------------------- create


def _check_create_fields(body: UserCreate) -> None:
    given = {k for k in body.model_fields_set if getattr(body, k) is not None}
    wrong = sorted((given & _ROLE_ONLY_FIELDS) - _ROLE_FIELDS[body.role])
    if wrong:
        raise ValidationFailed(
            f"{body.role.value} accounts do not take: " + ", ".join(wrong),
            extra={"fields": wrong},
        )


def _requested_grants(body: UserCreate) -> list[str]:
    grants: list[str] = []
    if body.template is not None:
        grants.extend(template_permissions(body.template))
    grants.extend(body.permissions or [])
    return validate_grants(grants)


_TRADER_TRAFFIC_FIELDS = ("team_lead_id", "pay_in", "pay_out", "trafic_priority")


def create_user(
    session: Session, *, actor: Principal, body: UserCreate, ip_address: str | None = None
) -> UserDetailRead:
    """Create a user of any role with its profile (and a trader's commission). Audited."""
    _ensure_may_manage(actor, body.role)
    _check_create_fields(body)
    if body.role == Role.TRADER and body.commission is not None:
        # The rates are what `PUT /traders/{id}/commission` sets, under the same grant.
        ensure_permission(actor, Permission.TRADER_COMMISSIONS_EDIT_ALL)
    if body.role == Role.TRADER and any(
        getattr(body, name) is not None for name in _TRADER_TRAFFIC_FIELDS
    ):
        # What `PATCH /traders/{id}` sets (team, directions, priority), under the same grant.
        ensure_permission(actor, Permission.TRADERS_EDIT_ALL)
    grants = _requested_grants(body)
    permission_service.ensure_grantable(actor, grants)
    fields: dict[str, Any] = {}
    if body.role == Role.MERCHANT and body.company_name is not None:
        fields["company_name"] = body.company_name
    if body.role == Role.SUPPORT and body.role_description is not None:
        fields["role_description"] = body.role_description
    if body.role == Role.TRADER:
        if body.team_lead_id is not None and session.get(TeamLead, body.team_lead_id) is None:
            raise ValidationFailed("team_lead_id: no such teamlead")
        if body.time_zone_id is not None and session.get(TimeZone, body.time_zone_id) is None:
            raise ValidationFailed("time_zone_id: no such time zone")
        for name in (*_TRADER_TRAFFIC_FIELDS, "time_zone_id"):
            value = getattr(body, name)
            if value is not None:
                fields[name] = value
    user = auth_service.create_user(
        session,
        email=body.email,
        password=body.password,
        role=body.role,
        first_name=body.first_name,
        last_name=body.last_name,
        permissions=grants if body.role in STAFF_ROLES else None,
        actor_user_id=actor.user_id,
        ip_address=ip_address,
        **fields,
    )
    if body.role == Role.TRADER and body.commission is not None:
        trader_id = session.scalar(select(Trader.id).where(Trader.user_id == user.id))
        session.add(
            TraderCommission(
                trader_id=trader_id,
                commission_payin=body.commission.payin_percent,
                commission_payout=body.commission.payout_percent,
            )
        )
        session.flush()
    session.expire(user)
    return user_detail(session, load_user(session, user.id))


# --------------------------------------------------------------------------- read


def list_users(
    session: Session,
    *,
    role: Role | None = None,
    active: bool | None = None,
    search: str | None = None,
    limit: int,
    offset: int,
) -> Page[UserRead]:
    """Users filtered by role, activity and a search over email and names, newest first."""
    stmt = select(User)
    if role is not None:
        stmt = stmt.where(User.role == role.value)
    if active is not None:
        stmt = stmt.where(User.is_active.is_(active))
    if search:
        pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        name_matches = [
            select(model.user_id).where(
                or_(model.first_name.ilike(pattern), model.last_name.ilike(pattern))
            )
            for model in (Admin, Support, TeamLead, Merchant, Trader)
        ]
        stmt = stmt.where(or_(User.email.ilike(pattern), *(User.id.in_(q) for q in name_matches)))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    users = (
        session.scalars(
            stmt.options(
                joinedload(User.admin),
                joinedload(User.support),
                joinedload(User.teamlead),
                joinedload(User.merchant),
                joinedload(User.trader),
            )
            .order_by(User.id.desc())
            .limit(limit)
            .offset(offset)
        )
        .unique()
        .all()
    )
    return Page(items=[user_read(u) for u in users], total=total, limit=limit, offset=offset)


def get_user(session: Session, *, user_id: int) -> UserDetailRead:
    """One user with profile and grants."""
    return user_detail(session, load_user(session, user_id))


def user_stats(session: Session) -> UserStatsRead:
    """Counts of users per role: active, inactive, anonymized, total."""
    rows = session.execute(
        select(
            User.role,
            func.count().filter(User.is_active.is_(True)),
            func.count().filter(User.is_active.is_(False)),
            func.count().filter(User.anonymized_at.is_not(None)),
            func.count(),
        ).group_by(User.role)
    ).all()
    by_role = {
        role.value: {"active": 0, "inactive": 0, "anonymized": 0, "total": 0} for role in Role
    }
    for role, act, inact, anon, total in rows:
        by_role[role] = {"active": act, "inactive": inact, "anonymized": anon, "total": total}
    return UserStatsRead(total=sum(r["total"] for r in by_role.values()), by_role=by_role)


# --------------------------------------------------------------------------- change


def update_user(
    session: Session,
    *,
    actor: Principal,
    user_id: int,
    body: UserUpdate,
    ip_address: str | None = None,
) -> UserChanged:
    """Change profile fields of a user (not email or role). Audited with old and new values."""
    user = load_user(session, user_id, for_update=True)
    role = Role(user.role)
    _ensure_may_manage(actor, role)
    permission_service.ensure_outranks(actor, user_grants(user))
    requested = {k: getattr(body, k) for k in body.model_fields_set}
    wrong = sorted(set(requested) - _UPDATE_FIELDS[role])
    if wrong:
        raise ValidationFailed(
            f"{role.value} accounts do not have: " + ", ".join(wrong), extra={"fields": wrong}
        )
    if user.anonymized_at is not None:
        raise Conflict("This user was anonymised", code="user_anonymized")
    profile = profile_of(user)
    if profile is None:
        raise NotFound("User profile not found")
    changes = {k: v for k, v in requested.items() if getattr(profile, k) != v}
    details: dict[str, Any] = {"fields": sorted(changes)}
    if "is_verified" in changes:
        details["is_verified"] = {"old": profile.is_verified, "new": changes["is_verified"]}
    for key, value in changes.items():
        setattr(profile, key, value)
    session.flush()
    if changes:
        # Field names only for text fields: names are personal data and must not outlive an
        # erasure in the log.
        log_event(
            session,
            action="user.updated",
            user_id=actor.user_id,
            target_entity="user",
            target_id=user.id,
            details=details,
            ip_address=ip_address,
        )
    return UserChanged(user=user_read(user), changed=bool(changes))


def set_active(
    session: Session,
    *,
    actor: Principal,
    user_id: int,
    active: bool,
    ip_address: str | None = None,
) -> UserChanged:
    """Activate or deactivate a user; tokens stop at once (every request re-reads `is_active`)."""
    if not active:
        lock_superusers(session)  # before the row lock: one order for every superuser change
    user = load_user(session, user_id, for_update=True)
    if Role(user.role) == Role.ADMIN:
        _ensure_may_manage(actor, Role.ADMIN)
    permission_service.ensure_outranks(actor, user_grants(user))
    if user.is_active == active:
        return UserChanged(user=user_read(user), changed=False)
    if active and user.anonymized_at is not None:
        raise Conflict("An anonymised user cannot be reactivated", code="user_anonymized")
    if not active:
        if user.id == actor.user_id:
            raise Conflict("You cannot deactivate yourself", code="self_deactivation")
        ensure_not_last_superuser(session, user, remaining=())
    user.is_active = active
    if not active:  # reactivation must not bring back the tokens issued before
        revoke_tokens(user)
    session.flush()
    log_event(
        session,
        action="user.activated" if active else "user.deactivated",
        user_id=actor.user_id,
        target_entity="user",
        target_id=user.id,
        details={"role": user.role},
        ip_address=ip_address,
    )
    return UserChanged(user=user_read(user), changed=True)


def reset_password(
    session: Session,
    *,
    actor: Principal,
    user_id: int,
    new_password: str,
    ip_address: str | None = None,
) -> UserChanged:
    """Set a user's password (an administrator's reset). Audited, never the password itself."""
    user = load_user(session, user_id, for_update=True)
    if user.id == actor.user_id:
        # One's own password changes only with the current one (`POST /{role}/password`): a
        # stolen session must not be able to lock the owner out.
        raise Conflict(
            "Change your own password with your current one (POST /admin/password)",
            code="self_password_reset",
        )
    _ensure_may_manage(actor, Role(user.role))
    permission_service.ensure_outranks(actor, user_grants(user))
    if user.anonymized_at is not None:
        raise Conflict("This user was anonymised", code="user_anonymized")
    user.password_hash = hash_password(new_password)
    revoke_tokens(user)
    session.flush()
    log_event(
        session,
        action="user.password_reset",
        user_id=actor.user_id,
        target_entity="user",
        target_id=user.id,
        ip_address=ip_address,
    )
    return UserChanged(user=user_read(user), changed=True)


def change_own_password(
    session: Session,
    *,
    principal: Principal,
    current_password: str,
    new_password: str,
    ip_address: str | None = None,
) -> None:
    """A user's own password change: the current password must match, the new one must differ."""
    user = load_user(session, principal.user_id, for_update=True)
    if not verify_password(current_password, user.password_hash):
        raise ValidationFailed("The current password is incorrect", code="invalid_current_password")
    if current_password == new_password:
        raise ValidationFailed("The new password must differ from the current one")
    user.password_hash = hash_password(new_password)
    revoke_tokens(user)
    session.flush()
    log_event(
        session,
        action="user.password_changed",
        user_id=user.id,
        target_entity="user",
        target_id=user.id,
        ip_address=ip_address,
    )


def get_grants(session: Session, *, user_id: int) -> GrantsRead:
    """A staff user's granted permissions."""
    user = load_user(session, user_id)
    role = Role(user.role)
    if role not in STAFF_ROLES:
        raise ValidationFailed(f"{role.value} accounts have no granted permissions")
    return GrantsRead(user_id=user.id, role=role, permissions=user_grants(user))


def set_grants(
    session: Session,
    *,
    actor: Principal,
    user_id: int,
    permissions: list[str],
    ip_address: str | None = None,
) -> GrantsRead:
    """Replace a staff user's grants: validated, de-duplicated, no escalation, audited."""
    lock_superusers(session)  # before the row lock: one order for every superuser change
    user = load_user(session, user_id, for_update=True)
    new = validate_grants(permissions)
    if Role(user.role) in STAFF_ROLES:
        _ensure_may_manage(actor, Role(user.role))
        permission_service.ensure_outranks(actor, user_grants(user))
        ensure_not_last_superuser(session, user, remaining=new)
    saved = permission_service.update_user_permissions(
        session,
        actor=actor,
        target_user_id=user_id,
        permissions=new,
        ip_address=ip_address,
    )
    return GrantsRead(user_id=user.id, role=Role(user.role), permissions=saved)
