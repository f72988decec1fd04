"""The way out of a replica's life: draining (the load balancer stops sending it new requests and its
sessions end), stopping its container, releasing its instance (or leaving it to the other replicas on it).
Each step is journaled and resumable like the way in (controller/loop/lifecycle.py).
"""

from __future__ import annotations

import logging

from controller.errors import NotFoundError, TransientError
from controller.loop.budget import per_node
from controller.loop.steps import (
    DRAIN_SETTLE,
    AnyReplica,
    S,
)
from controller.loop.warm_pool import WarmSteps
from controller.ports import (
    LABEL_REPLICA,
    TAG_INTENT,
    Owner,
)
from controller.store.models import IntentKind, IntentState

__all__ = ["WayOut"]

logger = logging.getLogger(__name__)


class WayOut(WarmSteps):
    """The steps from draining to gone (a node kept warm instead of released: controller/loop/warm_pool.py)."""

    # ------------------------------------------------------------------ the way out

    def _draining(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        if not r.server_name:  # never admitted: nothing to drain
            return ctx.store.transition(r.id, S.STOPPING)
        lb, backend = ctx.load_balancer(), self._backend()
        drained = ctx.store.intents(replica_id=r.id, kind=IntentKind.DRAIN, state=IntentState.DONE)
        if not drained:
            intent = ctx.store.step_intent(r, IntentKind.DRAIN, target=r.server_name)
            try:
                lb.drain(backend, r.server_name)
            except NotFoundError:
                pass  # not in the load balancer (reloaded, or removed by hand): nothing to drain
            except TransientError as exc:
                ctx.store.note_error(intent.id, str(exc))
                raise
            with ctx.store.transaction():  # one commit (PERF)
                ctx.store.complete(intent.id)
                ctx.event("drain", f"replica {r.id}: draining {r.server_name}", replica=r.id)
            return r  # sessions are read from the next step on, once requests already routed show up
        if ctx.now() - drained[-1].updated_at < DRAIN_SETTLE:
            return r
        forced = self._age_in_state(r) > float(ctx.policy.drain.timeout)
        if not forced:
            try:
                sessions = lb.sessions(backend, r.server_name)
            except NotFoundError:
                sessions = 0
            if sessions > 0:
                return r
        intent = ctx.store.step_intent(r, IntentKind.REMOVE, target=r.server_name)
        try:
            lb.remove(backend, r.server_name)
        except TransientError as exc:
            ctx.store.note_error(intent.id, str(exc))
            raise
        with ctx.store.transaction():  # one commit (PERF)
            if forced:
                ctx.event("drain-forced", f"replica {r.id}: drain exceeded {ctx.policy.drain.timeout:g}s; "
                          "removed with sessions still open", replica=r.id)
            return ctx.store.complete(intent.id, to=S.STOPPING) or r

    def _stopping(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        node = self._node(r)
        if node is None:  # never got an address: no container can exist
            return ctx.store.transition(r.id, S.RELEASING)
        intent = ctx.store.step_intent(r, IntentKind.STOP, target=r.container_id or node.instance_id)
        try:
            # by id when known; otherwise by the replica label (a start whose outcome was never written)
            ids = [r.container_id] if r.container_id else [
                c.id for c in ctx.edges.runtime.list(node, Owner(ctx.options.controller_id, r.policy))
                if c.labels.get(LABEL_REPLICA) == r.id]
            for container_id in ids:
                try:
                    ctx.edges.runtime.stop(node, container_id, str(ctx.policy.drain.signal),
                                           float(ctx.policy.drain.stop_timeout))
                    ctx.edges.runtime.remove(node, container_id)
                except NotFoundError:
                    pass
        except TransientError as exc:
            ctx.store.note_error(intent.id, str(exc))
            # a node that only blinked gets a boot timeout to come back for a graceful stop; not one whose
            # replica failed (its node dead or cut off, most likely): it still counts against replicas.max
            # and the budget until released, so waiting would hold its replacement back
            failed = ctx.store.replica(r.id)  # the round's snapshot row leaves ``failure`` out (PERF)
            grace = 0.0 if failed is not None and failed.failure else ctx.options.boot_timeout
            if self._age_in_state(r) <= float(ctx.policy.drain.stop_timeout) + grace:
                raise
            ctx.event("stop-skipped", f"replica {r.id}: node unreachable ({exc}); releasing it anyway",
                      replica=r.id)
        return ctx.store.complete(intent.id, to=S.RELEASING) or r

    def _releasing(self, r: AnyReplica) -> AnyReplica:
        if r.instance_id and per_node(self.ctx.policy) > 1:
            with self._placement:  # the last replica of an instance releases it, and only the last one
                others = [x.id for x in self.ctx.store.live_replicas(r.policy)
                          if x.instance_id == r.instance_id and x.id != r.id]
                if others:
                    return self._leave_instance(r, others)
                return self._release(r)
        parked = self._park(r)  # into the warm pool, when the policy keeps one and the node qualifies
        return parked if parked is not None else self._release(r)

    def _leave_instance(self, r: AnyReplica, others: list[str]) -> AnyReplica:
        ctx = self.ctx
        intent = ctx.store.step_intent(r, IntentKind.RELEASE, target=r.instance_id)
        self._last_probe.pop(r.id, None)
        ctx.event("release", f"replica {r.id}: left {r.instance_id}, which stays for {', '.join(others)}",
                  replica=r.id, instance=r.instance_id)
        return ctx.store.complete(intent.id, outcome={"released": [], "kept_for": others}, to=S.GONE) or r

    def _release(self, r: AnyReplica) -> AnyReplica:
        ctx = self.ctx
        ids = [r.instance_id] if r.instance_id else self._instances_of_launch(r)
        intent = ctx.store.step_intent(r, IntentKind.RELEASE, target=",".join(ids))
        for pending in ctx.store.intents(replica_id=r.id, state=IntentState.PENDING):
            if pending.kind == IntentKind.LAUNCH:  # a launch that may still land: its instances go too
                ids += [i for i in self._instances_of_launch(r, pending.id) if i not in ids]
                ctx.store.fail(pending.id, "cancelled: the replica is being released")
        if ids:
            try:
                ctx.edges.compute.release(ids)
            except TransientError as exc:
                ctx.store.note_error(intent.id, str(exc))
                raise
        self._last_probe.pop(r.id, None)
        with ctx.store.transaction():  # one commit (PERF)
            if ids:
                ctx.store.mark_released(ids)
            ctx.event("release", f"replica {r.id}: released {', '.join(ids) or 'nothing (never launched)'}",
                      replica=r.id)
            return ctx.store.complete(intent.id, outcome={"released": ids}, to=S.GONE) or r

    def _instances_of_launch(self, r: AnyReplica, intent_id: str | None = None) -> list[str]:
        """Instances a launch of this replica may have created, found by their intent tag."""
        intents = ([intent_id] if intent_id else
                   [i.id for i in self.ctx.store.intents(replica_id=r.id, kind=IntentKind.LAUNCH)])
        if not intents:
            return []
        owned = self.ctx.edges.compute.list(Owner(self.ctx.options.controller_id, r.policy))
        return [i.id for i in owned if i.tags.get(TAG_INTENT) in intents]
