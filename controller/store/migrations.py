"""Versioned schema migrations of the state database, applied in order at start-up by ``controller.store.state``.

Each migration is a function of a SQLAlchemy connection, written against its own snapshot of the tables
(never against the current sqlmodel classes, which move on), and numbered in ``MIGRATIONS``. They run in one
transaction under a lock, so two controllers starting at once cannot both migrate; the applied versions are
rows of ``schema_version``. To change the schema, append a function; never edit an applied one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

__all__ = ["LATEST", "MIGRATIONS", "current_version", "migrate"]

logger = logging.getLogger(__name__)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
_AUTO_ID = BigInteger().with_variant(Integer(), "sqlite")


def _v1_initial(conn: Connection) -> None:
    """The journal, the fleet, decisions, samples, events and per-policy state."""
    md = MetaData()
    Table(
        "intents", md,
        Column("id", String(64), primary_key=True),   # also the ClientToken of a launch
        Column("kind", String(32), nullable=False),
        Column("policy", String(64), nullable=False),
        Column("replica_id", String(64)),
        Column("target", String(255)),
        Column("token", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Column("created_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("outcome", Text),
        Column("error", Text),
        Column("payload", Text),
        # the leader's fencing token when the intent was written (issue 9: active/standby pair)
        Column("fence", BigInteger),
        Index("ix_intents_state_policy", "state", "policy"),
        Index("ix_intents_replica", "replica_id"),
    )
    Table(
        "instances", md,
        Column("id", String(64), primary_key=True),
        Column("policy", String(64), nullable=False),
        Column("replica_id", String(64)),
        Column("intent_id", String(64)),
        Column("instance_type", String(64), nullable=False),
        Column("zone", String(64), nullable=False),
        Column("private_ip", String(64)),
        Column("docker_endpoint", String(255)),
        Column("state", String(16), nullable=False),
        Column("spot", Boolean, nullable=False, default=False),
        Column("price_per_hour", Float),
        Column("created_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("released_at", Float),
        Index("ix_instances_policy", "policy"),
    )
    replica_cols: list[Column[Any]] = [
        Column("id", String(64), primary_key=True),
        Column("policy", String(64), nullable=False),
        Column("state", String(16), nullable=False),
        Column("spec_hash", String(80), nullable=False, default=""),
        Column("image", String(512)),
        Column("instance_id", String(64)),
        Column("container_id", String(80)),
        Column("server_name", String(200)),
        Column("address", String(64)),
        Column("port", Integer),
        Column("health_passes", Integer, nullable=False, default=0),
        Column("health_failures", Integer, nullable=False, default=0),
        Column("reason", Text),
        Column("failure", Text),
        Column("created_at", Float, nullable=False),
        Column("updated_at", Float, nullable=False),
        Column("state_since", Float, nullable=False),
    ]
    for state in ("planned", "replicating", "launching", "booting", "starting", "healthy", "serving",
                  "draining", "stopping", "releasing", "gone"):
        replica_cols.append(Column(f"{state}_at", Float))
    Table("replicas", md, *replica_cols, Index("ix_replicas_policy_state", "policy", "state"))
    Table(
        "decisions", md,
        Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
        Column("policy", String(64), nullable=False),
        Column("at", Float, nullable=False),
        Column("value", Float),
        Column("desired", Integer, nullable=False),
        Column("actual", Integer, nullable=False),
        Column("direction", String(8), nullable=False),
        Column("reason", Text, nullable=False),
        Column("details", Text),
        Index("ix_decisions_policy_at", "policy", "at"),
    )
    Table(
        "metric_samples", md,
        Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
        Column("policy", String(64), nullable=False),
        Column("at", Float, nullable=False),
        Column("value", Float),
        Column("ok", Boolean, nullable=False),
        Column("source", String(64), nullable=False, default=""),
        Column("error", Text),
        Column("capacity", Float),
        Column("replicas", Integer, nullable=False, default=0),
        Index("ix_samples_policy_at", "policy", "at"),
    )
    Table(
        "events", md,
        Column("id", _AUTO_ID, primary_key=True, autoincrement=True),
        Column("at", Float, nullable=False),
        Column("policy", String(64)),
        Column("kind", String(48), nullable=False),
        Column("message", Text, nullable=False),
        Column("details", Text),
        Index("ix_events_policy", "policy", "id"),
    )
    Table(
        "policy_state", md,
        Column("policy", String(64), primary_key=True),
        Column("paused", Boolean, nullable=False, default=False),
        Column("removed", Boolean, nullable=False, default=False),
        Column("drain_requested", Boolean, nullable=False, default=False),
        Column("last_scale_out", Float),
        Column("last_scale_in", Float),
        Column("target", Integer),      # replica count the last scaling action aimed at (replacements)
        Column("spec", Text),           # the last good policy (JSON), so a removed one can still be drained
        Column("source_file", String(1024)),
        Column("updated_at", Float, nullable=False),
    )
    md.create_all(conn)


def _v2_leader_lease(conn: Connection) -> None:
    """The leader lease of an active/standby pair (controller/ha/leader.py, SCALE-HA): one row per controller
    id; ``epoch`` is the fencing token, raised by every takeover."""
    md = MetaData()
    Table(
        "leader_lease", md,
        Column("controller_id", String(64), primary_key=True),
        Column("holder", String(200), nullable=False),   # host:pid:random of the holding process
        Column("epoch", BigInteger, nullable=False),
        Column("expires_at", Float, nullable=False),     # the database's clock on PostgreSQL
        Column("acquired_at", Float, nullable=False),
        Column("renewed_at", Float, nullable=False),
    )
    md.create_all(conn)


def _v3_node_images(conn: Connection) -> None:
    """Baked node images (``burstctl bake``, controller/loop/bake.py): the cloud image made for a policy's workload
    spec, so a launch for that spec hash can boot it instead of the policy's stock image."""
    md = MetaData()
    Table(
        "node_images", md,
        Column("image_id", String(64), primary_key=True),
        Column("policy", String(64), nullable=False),
        Column("spec_hash", String(80), nullable=False),
        Column("workload_image", String(512), nullable=False),  # the replica image baked in (repo@sha256:...)
        Column("base_image_id", String(128), nullable=False),   # the policy's image the builder booted
        Column("builder_instance", String(64)),
        Column("created_at", Float, nullable=False),            # when it became Available
        Column("deleted_at", Float),
        Index("ix_node_images_policy_spec", "policy", "spec_hash"),
    )
    md.create_all(conn)


def _v4_warm_pool(conn: Connection) -> None:
    """The warm pool (controller/loop/warm_pool.py): an instance stopped for the next burst instead of released
    is kept in ``instances`` with when it was stopped and what its disk carries (the workload spec hash and
    the replica image it ran), so a scale-out can start it and check both."""
    for column, kind in (("warm_since", "FLOAT"), ("warm_spec_hash", "VARCHAR(80)"), ("warm_image", "VARCHAR(512)")):
        conn.execute(text(f"ALTER TABLE instances ADD COLUMN {column} {kind}"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "initial schema", _v1_initial),
    (2, "leader lease", _v2_leader_lease),
    (3, "baked node images", _v3_node_images),
    (4, "warm pool", _v4_warm_pool),
]
LATEST = MIGRATIONS[-1][0]

_VERSION_TABLE = Table(
    "schema_version", MetaData(),
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_at", Float, nullable=False),
)


def current_version(conn: Connection) -> int:
    row = conn.execute(text("SELECT MAX(version) FROM schema_version")).scalar()
    return int(row or 0)


def migrate(conn: Connection) -> list[int]:
    """Apply every pending migration inside the caller's transaction; return the versions applied."""
    _VERSION_TABLE.create(conn, checkfirst=True)
    if conn.dialect.name == "postgresql":
        # Serialises concurrent start-ups of a pair: the second waits, then finds nothing to do.
        conn.execute(text("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE"))
    have = current_version(conn)
    if have > LATEST:
        raise RuntimeError(f"state database schema is version {have}, newer than this controller ({LATEST})")
    applied = []
    for version, description, fn in MIGRATIONS:
        if version <= have:
            continue
        logger.info("applying state schema migration %d: %s", version, description)
        fn(conn)
        conn.execute(_VERSION_TABLE.insert().values(version=version, description=description,
                                                    applied_at=time.time()))
        applied.append(version)
    return applied
