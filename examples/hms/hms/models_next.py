"""The hospital's next release of the models, for the live-table walk-through of
docs/workflow.md (section 6): `patients` already holds rows when these changes reach it.

Against `models.py`: patients are looked up by date of birth (an index), a name may not be empty
(a CHECK constraint), and every patient has an admission status (a new NOT NULL column, which the
existing rows need a value for).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from hms.models import NAMING_CONVENTION


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (sa.CheckConstraint("char_length(name) > 0", name="name_not_empty"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    date_of_birth: Mapped[date] = mapped_column(index=True)
    email: Mapped[str | None] = mapped_column(sa.String(320), unique=True)
    created_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
    preferences: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=sa.text("'{}'::jsonb")
    )
    status: Mapped[str] = mapped_column(sa.String(20))


class HospitalSetting(Base):
    __tablename__ = "hospital_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(100), unique=True)
    value: Mapped[str] = mapped_column(sa.Text)
    updated_at: Mapped[datetime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.func.now()
    )
