"""The JSON API's tokens and the answers kept for ``Idempotency-Key`` retries. Functions take a Session and never
commit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from syndication.core.api_tokens import ApiToken
from syndication.store.schema import ApiIdempotencyRow, ApiTokenRow


def add_token(
    session: Session, *, name: str, scopes: tuple[str, ...], secret_hash: str, now: datetime, created_by: str
) -> ApiToken:
    """Store a new token; returns it with its id."""
    row = ApiTokenRow(name=name, scopes=list(scopes), secret_hash=secret_hash, created_at=now, created_by=created_by)
    session.add(row)
    session.flush()
    return _token(row)


def tokens(session: Session) -> list[ApiToken]:
    """Every token, in id order, revoked ones too."""
    return [_token(row) for row in session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id))]


def token_and_hash(session: Session, token_id: int) -> tuple[ApiToken, str] | None:
    """The token with this id and the hash of its secret, or None."""
    row = session.get(ApiTokenRow, token_id)
    return None if row is None else (_token(row), row.secret_hash)


def revoke(session: Session, token_id: int, now: datetime) -> ApiToken | None:
    """Revoke the token (a revoked one keeps the time it was first revoked); None when there is none."""
    row = session.get(ApiTokenRow, token_id)
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = now
        session.flush()
    return _token(row)


def touch(session: Session, token_id: int, now: datetime) -> None:
    """Note that the token was used at ``now``."""
    row = session.get(ApiTokenRow, token_id)
    if row is not None:
        row.last_used_at = now


def kept_answer(session: Session, token_id: int, key: str, since: datetime) -> tuple[str, int, str] | None:
    """The (request hash, status, body) kept for ``key`` of this token at or after ``since``, or None."""
    row = session.scalars(
        select(ApiIdempotencyRow).where(
            ApiIdempotencyRow.token_id == token_id,
            ApiIdempotencyRow.key == key,
            ApiIdempotencyRow.created_at >= since,
        )
    ).first()
    return None if row is None else (row.request_hash, row.status, row.body)


def keep_answer(
    session: Session, *, token_id: int, key: str, request_hash: str, status: int, body: str, now: datetime
) -> None:
    """Keep the answer given to ``key`` (replacing an expired one of the same key)."""
    session.execute(
        delete(ApiIdempotencyRow).where(ApiIdempotencyRow.token_id == token_id, ApiIdempotencyRow.key == key)
    )
    session.add(
        ApiIdempotencyRow(
            token_id=token_id, key=key, request_hash=request_hash, status=status, body=body, created_at=now
        )
    )
    session.flush()


def forget_answers(session: Session, before: datetime) -> int:
    """Remove the answers kept from before ``before``; returns how many."""
    result = session.execute(delete(ApiIdempotencyRow).where(ApiIdempotencyRow.created_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _token(row: ApiTokenRow) -> ApiToken:
    return ApiToken(
        row.id, row.name, tuple(row.scopes), row.created_at, row.created_by, row.last_used_at, row.revoked_at
    )
