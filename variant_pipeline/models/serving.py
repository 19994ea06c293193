"""Ray Serve deployments of the served model families: the replica side, and deploying them.

One Serve application per family (``vp-vlm``, ``vp-detector``, ...), built from its registry row
(``ModelFamily.served``: the batched methods, attributes and batch default), which the deployment
carries, so a replica serves whatever row it was given. Each replica loads its family's model
once, with the same loading code and load-once cache a run uses, and coalesces concurrent calls
from every run (``@serve.batch``) into one call of the family's own batched method: three
variants asking the VLM one question each become one ``generate`` over three images. A call's
arguments are bound to the model method's own signature (its defaults filled in), then grouped
by method and by their non-list arguments (a greedy call and a sampled one never share a model
call); per-item arguments such as seeds travel with their items.

Each replica keeps counters (loads, calls, a histogram of calls per model call, queue length)
and reports them to one small named actor, so ``serve status`` and the tests read them for every
replica, without timings. The client side, which a run imports, is ``serve_client.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from variant_pipeline.config import Settings
from variant_pipeline.models import registry
from variant_pipeline.models.ray_head import RAY_NAMESPACE, bind_to_node_ip, prepare_driver_env
from variant_pipeline.models.registry import BatchedMethod, ModelFamily, served_by_ray
from variant_pipeline.models.serve_options import serve_options

APP_PREFIX = "vp-"
STATS_ACTOR = "vp-model-stats"


def app_name(family: str) -> str:
    return f"{APP_PREFIX}{family}"


@dataclass(frozen=True)
class ModelCall:
    """One run's call: a method of the family's model and its arguments (by name once bound)."""

    method: str
    kwargs: dict[str, Any]
    args: tuple[Any, ...] = ()  # positional arguments, as the run's code passed them

    def n_items(self, spec: BatchedMethod) -> int:
        return len(self.kwargs[spec.items[0]])

    def bound(self, method: Callable[..., Any]) -> ModelCall:
        """Every argument by name, defaults included, so equal calls group alike."""
        arguments = inspect.signature(method).bind(*self.args, **self.kwargs)
        arguments.apply_defaults()
        return ModelCall(self.method, dict(arguments.arguments))


@dataclass(frozen=True)
class CallInfo:
    """What a run records about a served call (materialization metadata)."""

    replica: str
    batch_size: int  # calls (variants) in the one model call this call went into
    items: int  # items over all of them
    queued_s: float  # from arrival at the replica to the start of its model call
    replica_loads: int  # model loads that replica has done so far


@dataclass(frozen=True)
class Reply:
    result: Any
    info: CallInfo | None  # None: a call with no items, answered without a model call
    error: BaseException | None = None


def _group_key(call: ModelCall, spec: BatchedMethod) -> Hashable:
    per_call = set(spec.items) | set(spec.spread)
    shared = tuple(sorted((k, repr(v)) for k, v in call.kwargs.items() if k not in per_call))
    present = tuple(call.kwargs.get(k) is None for k in spec.spread)
    size = call.kwargs[spec.same_size][0].size if spec.same_size and call.kwargs[spec.same_size] else None
    return (call.method, shared, present, size)


def combine(calls: list[ModelCall], spec: BatchedMethod) -> dict[str, Any]:
    """The arguments of one model call serving ``calls`` (which share a group key)."""
    kwargs = dict(calls[0].kwargs)
    for name in spec.items:
        kwargs[name] = [x for c in calls for x in c.kwargs[name]]
    for name in spec.spread:
        if kwargs.get(name) is None:
            continue
        per_item: list[Any] = []
        for c in calls:
            value, n = c.kwargs[name], c.n_items(spec)
            per_item.extend([value] * n if isinstance(value, str | int | float) else list(value))
        kwargs[name] = per_item
    return kwargs


def split(results: list[Any], calls: list[ModelCall], spec: BatchedMethod) -> list[list[Any]]:
    out, start = [], 0
    for c in calls:
        n = c.n_items(spec)
        out.append(list(results[start:start + n]))
        start += n
    if start != len(results):
        raise RuntimeError(f"{calls[0].method} returned {len(results)} results for {start} items")
    return out


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


class ModelServer:
    """A replica of one family (wrapped as a Serve deployment by ``deploy``)."""

    def __init__(self, fam: ModelFamily, settings: Settings, max_batch_size: int, batch_wait_s: float) -> None:
        from ray import serve

        # Serve starts this replica's internal gRPC server after __init__ returns: bind it to the
        # node's address, not to every interface.
        bind_to_node_ip()
        if fam.served is None:
            raise ValueError(f"model family {fam.name!r} is not served (its row's `served` is None)")
        self.family = fam.name
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._methods = fam.served.methods
        self._attributes = fam.served.attributes
        # The row's loader, as a run would call it: load-once through the process's cache.
        self.model = fam.load(settings)
        # Batching wraps this replica's own method with its family's limits (importing this
        # module imports no ray: a run reaches it only through a connected driver).
        self._coalesce = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s)(
            self._coalesce_batch)
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self.calls = 0
        self.in_flight = 0  # calls received and not yet answered (waiting or in a model call)
        self.compute_s = 0.0  # seconds inside successful model calls
        self.model_calls: Counter[int] = Counter()  # calls per model call -> how often
        self._queued: set[int] = set()
        self.max_queue = 0
        self._stats_actor: Any = None
        self._report()

    def loads(self) -> int:
        from variant_pipeline.models.cache import MODEL_CACHE

        return sum(MODEL_CACHE.load_counts().values())

    async def __call__(self, call: ModelCall) -> Reply:
        if call.method not in self._methods:
            raise ValueError(f"{self.family} serves {sorted(self._methods)}, not {call.method!r}")
        try:
            call = call.bound(getattr(self.model, call.method))
        except TypeError as exc:  # arguments the method does not take: the caller's error, raised there
            return Reply(None, None, exc)
        if call.n_items(self._methods[call.method]) == 0:
            return Reply([], None)
        self.calls += 1
        self.in_flight += 1
        token = id(call)
        self._queued.add(token)
        self.max_queue = max(self.max_queue, len(self._queued))
        self._report()
        try:
            return await self._coalesce((call, token, time.monotonic()))
        finally:
            self._queued.discard(token)
            self.in_flight -= 1
            self._report()

    async def _coalesce_batch(self, arrivals: list[tuple[ModelCall, int, float]]) -> list[Reply]:
        started = time.monotonic()
        for _call, token, _t in arrivals:
            self._queued.discard(token)
        groups: dict[Hashable, list[int]] = {}
        for i, (call, _token, _t) in enumerate(arrivals):
            groups.setdefault(_group_key(call, self._methods[call.method]), []).append(i)
        replies: list[Reply | None] = [None] * len(arrivals)
        for indices in groups.values():
            calls = [arrivals[i][0] for i in indices]
            outcomes = await asyncio.to_thread(self._run_group, calls)
            for i, (result, error, size) in zip(indices, outcomes, strict=True):
                info = CallInfo(self.replica, size, sum(c.n_items(self._methods[c.method]) for c in calls),
                                round(started - arrivals[i][2], 4), self.loads())
                replies[i] = Reply(result, info, error)
        self._report()
        return replies  # type: ignore[return-value]

    def _run_group(self, calls: list[ModelCall]) -> list[tuple[Any, BaseException | None, int]]:
        """One model call for the group; if it fails, each call alone (a bad call fails only itself)."""
        spec = self._methods[calls[0].method]
        method: Callable[..., list[Any]] = getattr(self.model, calls[0].method)
        started = time.perf_counter()
        try:
            results = split(list(method(**combine(calls, spec))), calls, spec)
            self.compute_s += time.perf_counter() - started
            self.model_calls[len(calls)] += 1
            return [(r, None, len(calls)) for r in results]
        except Exception as exc:
            if len(calls) == 1:
                self.model_calls[1] += 1
                return [(None, exc, 1)]
        return [self._run_group([c])[0] for c in calls]

    def attribute(self, name: str) -> Any:
        if name not in self._attributes:
            raise AttributeError(f"{self.family} model server does not expose {name!r}")
        return getattr(self.model, name)

    def stats(self) -> dict[str, Any]:
        from variant_pipeline.models.cache import MODEL_CACHE

        return {
            "family": self.family, "replica": self.replica, "pid": os.getpid(), "loads": self.loads(),
            "load_counts": {"|".join(k): n for k, n in MODEL_CACHE.load_counts().items()},
            "calls": self.calls, "model_calls": sum(self.model_calls.values()),
            "batch_sizes": {str(k): v for k, v in sorted(self.model_calls.items())},
            "queue_length": len(self._queued), "max_queue_length": self.max_queue, "in_flight": self.in_flight,
            "max_batch_size": self.max_batch_size, "batch_wait_s": self.batch_wait_s,
            "compute_s": round(self.compute_s, 3), "peak_rss_bytes": _peak_rss_bytes(),
        }

    def _report(self) -> None:
        """Hand the counters to the stats actor (fire and forget: serving never waits on it)."""
        import ray

        try:
            if self._stats_actor is None:
                self._stats_actor = ray.get_actor(STATS_ACTOR, namespace=RAY_NAMESPACE)
            self._stats_actor.report.remote(self.stats())
        except ValueError:
            self._stats_actor = None  # not created (a deployment made without ``deploy``)


class StatsStore:
    """The named actor that holds every replica's last counters (for ``serve status`` and tests)."""

    def __init__(self) -> None:
        self.replicas: dict[str, dict[str, Any]] = {}

    def report(self, stats: dict[str, Any]) -> None:
        self.replicas[stats["replica"]] = stats

    def all(self) -> dict[str, dict[str, Any]]:
        return dict(self.replicas)


def _stats_actor() -> Any:
    import ray

    return ray.remote(num_cpus=0)(StatsStore).options(
        name=STATS_ACTOR, namespace=RAY_NAMESPACE, lifetime="detached", get_if_exists=True).remote()


def served_families(settings: Settings) -> tuple[str, ...]:
    """The registry's families served with these settings (with the OpenAI text backend the text
    model stays an HTTP client in the run)."""
    ray_settings = settings.model_copy(update={"model_backend": "ray"})
    return tuple(f.name for f in registry.FAMILIES if served_by_ray(f, ray_settings))


def deploy(settings: Settings, families: tuple[str, ...] | None = None) -> dict[str, str]:
    """Deploy (or update) one Serve application per family on the connected cluster; waits until
    each is running. Returns family -> application name."""
    options = serve_options(settings)  # checked before anything is deployed
    prepare_driver_env(settings)
    from ray import serve

    serve.start(proxy_location="Disabled")  # runs reach the replicas by handle, never over HTTP
    _stats_actor()
    apps = {}
    for family in families or served_families(settings):
        opts = options[family]
        deployment = serve.deployment(
            ModelServer,
            name=f"{family}_server",
            num_replicas=opts.replicas,
            # Room for every call that may wait for a batch, plus the batch being computed.
            max_ongoing_requests=max(64, 4 * opts.max_batch_size),
            ray_actor_options={"num_cpus": 0, "num_gpus": opts.gpus},
        )
        # The row itself goes with the deployment: the replica needs no registry lookup.
        bound = deployment.bind(registry.family(family), settings, opts.max_batch_size, opts.batch_wait_s)
        serve.run(bound, name=app_name(family), route_prefix=None)
        apps[family] = app_name(family)
    return apps


def replica_stats(include_dead: bool = False) -> list[dict[str, Any]]:
    """The last counters of every live replica, each with ``live``: True (a replica that died is
    left out, or with ``include_dead`` kept with ``live``: False)."""
    import ray

    names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    stats = ray.get(_stats_actor().all.remote())
    marked = [{**s, "live": any(s["replica"] in name for name in names)} for s in stats.values()]
    return [s for s in marked if include_dead or s["live"]]


def undeploy() -> list[str]:
    """Remove this project's applications from the connected cluster (it keeps running)."""
    import ray
    from ray import serve

    apps = [name for name in serve.status().applications if name.startswith(APP_PREFIX)]
    for name in apps:
        serve.delete(name)
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(STATS_ACTOR, namespace=RAY_NAMESPACE))
    return apps


def status_lines() -> list[str]:
    """``serve status``: each application's state, then each live replica's counters."""
    from ray import serve

    lines = []
    apps = {n: a for n, a in serve.status().applications.items() if n.startswith(APP_PREFIX)}
    if not apps:
        return ["no model families deployed (variant-pipeline serve start)"]
    stats = replica_stats()
    for name, app in sorted(apps.items()):
        replicas = sum(n for d in app.deployments.values() for n in d.replica_states.values())
        lines.append(f"{name}: {app.status.value}, {replicas} replica(s)")
        for s in sorted((s for s in stats if app_name(s["family"]) == name), key=lambda s: s["replica"]):
            histogram = " ".join(f"{k}x{v}" for k, v in s["batch_sizes"].items()) or "-"
            lines.append(
                f"  replica {s['replica']} (pid {s['pid']}): loads {s['loads']}, calls {s['calls']}, "
                f"model calls {s['model_calls']}, queue {s['queue_length']} (max {s['max_queue_length']}), "
                f"batch sizes {histogram} (max {s['max_batch_size']}, wait {s['batch_wait_s']:g} s), "
                f"peak RSS {s['peak_rss_bytes'] / 2**20:.0f} MiB")
    return lines


def start_and_deploy(settings: Settings, port: int, num_cpus: int | None = None,
                     log: Callable[[str], None] = print) -> tuple[str, bool]:
    """``serve start``: a local head (unless ``RAY_ADDRESS`` names a cluster), then the families
    deployed on it. Returns the address and whether a local head was started here."""
    from variant_pipeline.models import ray_head

    started = False
    if not settings.ray_address:
        record = ray_head.read_record(settings)
        started = record is None or not ray_head.head_alive(record)
        record = ray_head.start_head(settings, port, num_cpus)
        log(f"Ray head on {record.address} (pid {record.pid}, log {record.log})")
    address = ray_head.connect(settings)
    for family, app in deploy(settings).items():
        log(f"deployed {family} as {app} on {address}")
    return address, started
