"""The reference for bench/intake.py: a bare FastAPI endpoint that inserts one row through the same
jivapay engine, with none of the platform's middleware, auth or business logic."""

from __future__ import annotations

import json

from fastapi import FastAPI
from sqlalchemy import text

from jivapay.database.engine import get_engine

app = FastAPI()


@app.post("/bare")
def bare(payload: dict[str, object]) -> dict[str, int]:
    with get_engine().begin() as conn:
        new_id = conn.execute(
            text("INSERT INTO bench_rows (payload) VALUES (CAST(:p AS jsonb)) RETURNING id"),
            {"p": json.dumps(payload)},
        ).scalar_one()
    return {"id": int(new_id)}
