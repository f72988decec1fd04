"""The warm pool (policy ``warm_pool``, ECS economical mode): a node whose replica scaled in is stopped instead
of released, its Docker Engine and the replica's image kept on its disk (``park``); a scale-out starts such a
node before it launches new ones (``wake``); a node too old, of an old spec, beyond the pool's size or of a
removed policy is released (``tend``). Each is journaled like the other steps (design rule 1: the intent,
then StopInstances / StartInstances / DeleteInstances, then the outcome in one commit), and re-runs after a
crash: a pending park or wake intent belongs to its replica, whose next step resumes it; a pending expiry
is resumed by the next ``tend``. Called by the way out (controller/loop/way_out.py), the launch step
(controller/loop/lifecycle.py) and the step round (controller/loop/rounds.py).
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from controller.errors import NotFoundError, PermanentError, TransientError
from controller.loop.budget import per_node
from controller.loop.steps import AnyReplica, PolicyContext, ReplicaSteps, S, in_shadow
from controller.ports import InstanceState
from controller.store.models import InstanceRow, Intent, IntentKind, IntentState

__all__ = ["DEFAULT_DISK_PRICE", "WarmSteps", "disk_price", "pool_size", "short_image"]

logger = logging.getLogger(__name__)

# Per hour, one stopped node: a 40 GiB ESSD PL0 system disk at about 0.5/GiB-month (pay-as-you-go, mainland
# regions; docs/daemon.md "The warm pool" says where it comes from). A policy sets its own with
# warm_pool.disk_price.
DEFAULT_DISK_PRICE = 0.03


def pool_size(policy: Any) -> int:
    """``warm_pool.size`` (0: no pool); a pool needs one replica per node."""
    warm = getattr(policy, "warm_pool", None)
    size = int(getattr(warm, "size", 0) or 0)
    return size if per_node(policy) == 1 else 0


def disk_price(policy: Any) -> float:
    """What one stopped node of the pool costs per hour."""
    price = getattr(getattr(policy, "warm_pool", None), "disk_price", None)
    return float(price) if price is not None else DEFAULT_DISK_PRICE


def _max_age(policy: Any) -> float:
    return float(getattr(getattr(policy, "warm_pool", None), "max_age", 86400.0))


def _payload(intent: Intent) -> dict[str, Any]:
    try:
        return dict(json.loads(intent.payload or "{}"))
    except ValueError:
        return {}


def short_image(reference: str) -> str:
    """``repo@sha256:`` and the digest's first 12 hex digits, without the registry: what an event shows of a
    long image reference (``10.0.0.1:5000/acme/shop@sha256:4efc...`` -> ``acme/shop@sha256:4efc466e5263``)."""
    name, at, digest = reference.partition("@")
    if "/" in name and ("." in name.split("/", 1)[0] or ":" in name.split("/", 1)[0]):
        name = name.split("/", 1)[1]  # the registry host
    return f"{name}{at}{digest[:19]}" if at else name


class WarmSteps(ReplicaSteps):
    """Park, wake and tend; shared by the way in and the way out."""

    def __init__(self, ctx: PolicyContext) -> None:
        super().__init__(ctx)
        # choosing a node for the pool or from it reads the whole pool: parallel steps must not interleave
        self._pool_lock = threading.Lock()

    # ------------------------------------------------------------------ park (the way out)

    def _park(self, r: AnyReplica) -> AnyReplica | None:
        """Stop ``r``'s node into the pool instead of releasing it, when the pool wants it; None: release as
        usual. A park begun before a crash is carried on whatever the pool says now."""
        ctx = self.ctx
        pending = ctx.store.intents(replica_id=r.id, kind=IntentKind.PARK, state=IntentState.PENDING)
        if pending:
            return self._stop_into_pool(r, pending[0])
        with self._pool_lock:
            why_not = self._why_not_park(r)
            if why_not:
                if pool_size(ctx.policy):
                    logger.info("replica %s: node %s released, not kept warm: %s", r.id, r.instance_id, why_not)
                return None
            full = ctx.store.replica(r.id)
            assert full is not None and r.instance_id
            intent = ctx.store.step_intent(r, IntentKind.PARK, target=r.instance_id,
                                           payload={"spec_hash": full.spec_hash, "image": full.image})
        return self._stop_into_pool(r, intent)

    def _why_not_park(self, r: AnyReplica) -> str | None:
        ctx = self.ctx
        size = pool_size(ctx.policy)
        if not size or not r.instance_id:
            return "no warm pool" if not size else "no instance"
        if in_shadow(ctx.policy) or getattr(ctx, "removed", False):
            return "the policy is removed or in shadow mode"
        full = ctx.store.replica(r.id)  # the round's row leaves out failure and image (PERF)
        if full is None or full.failure:
            return f"the replica failed ({full.failure if full else 'gone'})"
        if not full.image or not full.spec_hash or full.container_id is None:
            return "its container never started: the image may not be on its disk"
        current = getattr(ctx, "spec_hash", lambda: "")()
        if current and full.spec_hash != current:
            return "it runs an old workload spec"
        row = ctx.store.instance(r.instance_id)
        if row is None or row.released_at is not None:
            return "its instance is not in the journal"
        if row.spot:
            return "a spot instance may be reclaimed while stopped"
        if ctx.now() - row.created_at >= _max_age(ctx.policy):
            return "older than warm_pool.max_age"
        # parks in flight first, then the pool: a park that completes in between is counted twice (this one is
        # then released, the safe side), never missed
        parking = len([i for i in ctx.store.intents(policy=r.policy, kind=IntentKind.PARK,
                                                     state=IntentState.PENDING) if i.replica_id != r.id])
        parked = len(ctx.store.warm_instances(r.policy))
        if parked + parking >= size:
            return f"the pool is full ({parked + parking} of {size})"
        return None

    def _stop_into_pool(self, r: AnyReplica, intent: Intent) -> AnyReplica | None:
        ctx = self.ctx
        iid = intent.target or r.instance_id or ""
        facts = _payload(intent)
        try:
            ctx.edges.compute.stop([iid], charging=False)
        except NotFoundError:
            # gone meanwhile: nothing to keep, nothing to release
            with ctx.store.transaction():
                ctx.store.mark_released([iid])
                ctx.event("park", f"replica {r.id}: {iid} is gone, nothing kept warm", replica=r.id, instance=iid)
                return ctx.store.fail(intent.id, "instance gone", to=S.GONE) or r
        except TransientError as exc:
            ctx.store.note_error(intent.id, str(exc))
            raise
        except PermanentError as exc:  # it cannot be stopped (its state, its type): released instead
            ctx.store.fail(intent.id, f"not stopped: {exc}")
            ctx.event("park", f"replica {r.id}: {iid} could not be stopped ({exc}); releasing it", replica=r.id,
                      instance=iid)
            return None  # the way out releases it
        self._last_probe.pop(r.id, None)
        # the outcome in one commit (the node is in the pool, the replica gone), under the pool lock: another
        # replica's park check reads the pool and the parks in flight in two queries, and this commit between
        # them would hide this node from both (seen in CI: two nodes parked in a pool of one)
        with self._pool_lock, ctx.store.transaction():
            ctx.store.mark_warm(iid, spec_hash=str(facts.get("spec_hash") or ""), image=str(facts.get("image") or ""))
            ctx.event("park", f"replica {r.id}: stopped {iid} into the warm pool (StopCharging; image "
                      f"{short_image(str(facts.get('image') or '-'))} on its disk)", replica=r.id, instance=iid)
            return ctx.store.complete(intent.id, outcome={"parked": iid}, to=S.GONE) or r

    # ------------------------------------------------------------------ wake (the way in)

    def _wake(self, r: AnyReplica, launch: Intent) -> AnyReplica | None:
        """Start a warm node of the same workload spec and replica image for ``r`` (its launch intent
        ``launch`` is then done without a RunInstances); None: no such node, launch a new one. A wake begun
        before a crash is carried on."""
        ctx = self.ctx
        pending = ctx.store.intents(replica_id=r.id, kind=IntentKind.WAKE, state=IntentState.PENDING)
        if pending:
            return self._start_from_pool(r, pending[0], launch)
        if not pool_size(ctx.policy) and not ctx.store.warm_instances(r.policy):
            return None
        with self._pool_lock:
            node = self._pick(r)
            if node is None:
                return None
            intent = ctx.store.step_intent(r, IntentKind.WAKE, target=node.id,
                                           payload={"spec_hash": node.warm_spec_hash, "image": node.warm_image})
        return self._start_from_pool(r, intent, launch)

    def _pick(self, r: AnyReplica) -> InstanceRow | None:
        """The pool's node for ``r``: same spec hash and replica image, not too old, not claimed by another
        wake or an expiry; the oldest launch first (it would expire first)."""
        ctx = self.ctx
        full = ctx.store.replica(r.id)
        if full is None or not full.spec_hash or not full.image:
            return None
        claimed = ctx.store.claimed_warm(r.policy)
        now, max_age = ctx.now(), _max_age(ctx.policy)
        for row in ctx.store.warm_instances(r.policy):
            if row.id in claimed or now - row.created_at >= max_age:
                continue
            if row.warm_spec_hash == full.spec_hash and row.warm_image == full.image:
                return row
        return None

    def _start_from_pool(self, r: AnyReplica, intent: Intent, launch: Intent) -> AnyReplica | None:
        ctx = self.ctx
        iid = intent.target or ""
        found = ctx.edges.compute.get([iid])
        state = found[0].state if found else InstanceState.GONE
        if state == InstanceState.GONE:  # released behind our back: forget it, launch a new node instead
            with ctx.store.transaction():
                ctx.store.mark_released([iid])
                ctx.store.fail(intent.id, "the warm node is gone")
                ctx.event("wake", f"replica {r.id}: warm node {iid} is gone; launching a new one", replica=r.id)
            return None
        if state == InstanceState.STOPPING:
            return r  # still stopping from its park: started at a next step (the claim holds it)
        if state == InstanceState.STOPPED:
            try:
                ctx.edges.compute.start([iid])
            except TransientError as exc:
                ctx.store.note_error(intent.id, str(exc))
                raise
            except PermanentError as exc:  # e.g. no stock for its type any more (economical mode's risk)
                with ctx.store.transaction():
                    ctx.store.fail(intent.id, f"not started: {exc}")
                    ctx.event("wake", f"replica {r.id}: warm node {iid} did not start ({exc}); launching a new "
                              "one", replica=r.id, instance=iid)
                return None
        with ctx.store.transaction():  # the node is the replica's: its launch is done, it boots
            ctx.store.mark_woken(iid, replica_id=r.id)
            ctx.store.complete(intent.id, outcome={"started": iid})
            ctx.event("wake", f"replica {r.id}: started warm node {iid} (image already on its disk)", replica=r.id,
                      instance=iid)
            return ctx.store.complete(launch.id, outcome={"instances": [], "woke": iid}, to=S.BOOTING,
                                      instance_id=iid) or r

    # ------------------------------------------------------------------ tend (every step round)

    def tend_pool(self) -> list[str]:
        """Release the pool's nodes that should go: expiries begun before a crash first, then nodes past
        ``warm_pool.max_age``, of another spec than the workload's, beyond ``warm_pool.size``, or of a
        removed or shadow policy. Nodes claimed by a wake are left alone. Returns the ids released."""
        ctx = self.ctx
        name = str(ctx.policy.name)
        released: list[str] = []
        for intent in ctx.store.intents(policy=name, kind=IntentKind.EXPIRE, state=IntentState.PENDING):
            released += self._expire(intent, _payload(intent).get("why", "resumed"))
        with self._pool_lock:
            claimed = ctx.store.claimed_warm(name)
            nodes = [n for n in ctx.store.warm_instances(name) if n.id not in claimed]
            size = pool_size(ctx.policy)
            current = getattr(ctx, "spec_hash", lambda: "")()
            gone = in_shadow(ctx.policy) or getattr(ctx, "removed", False)
            now, max_age = ctx.now(), _max_age(ctx.policy)
            doomed: list[tuple[InstanceRow, str]] = []
            keep: list[InstanceRow] = []
            for n in nodes:
                if gone:
                    doomed.append((n, "the policy is removed or in shadow mode"))
                elif now - n.created_at >= max_age:
                    doomed.append((n, f"older than warm_pool.max_age ({max_age:g}s)"))
                elif current and n.warm_spec_hash != current:
                    doomed.append((n, "its disk carries an old workload spec"))
                else:
                    keep.append(n)
            extra = len(keep) - size  # nodes being woken are leaving the pool: not counted
            for n in keep[:max(0, extra)]:  # the oldest go first
                doomed.append((n, f"beyond warm_pool.size ({size})"))
            intents = [(ctx.store.pool_intent(name, IntentKind.EXPIRE, target=n.id, payload={"why": why}), why)
                       for n, why in doomed]
        for intent, why in intents:
            released += self._expire(intent, why)
        return released

    def _expire(self, intent: Intent, why: str) -> list[str]:
        ctx = self.ctx
        iid = intent.target or ""
        try:
            ctx.edges.compute.release([iid])
        except TransientError as exc:
            ctx.store.note_error(intent.id, str(exc))
            raise
        with ctx.store.transaction():
            ctx.store.mark_released([iid])
            ctx.store.complete(intent.id, outcome={"released": [iid]})
            ctx.event("warm-expired", f"released warm node {iid}: {why}", instance=iid)
        return [iid]

