"""`burstctl emulate ecs`: run the local ECS API emulator in the foreground (for the demo, manual runs
and anything that wants a separate process). Tests start it in-process with ``EcsEmulator`` instead."""

from __future__ import annotations

import argparse
import functools
import ipaddress
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from controller.errors import ConfigError
from lab.emulator.ecs import EcsEmulator
from lab.emulator.ecs_records import DEFAULT_PRICES, EcsConfig
from lab.emulator.faults import Faults
from policies.units import parse_duration


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulate", help="run a local cloud API emulator (ECS) on loopback")
    psub = p.add_subparsers(dest="emulate_command", metavar="PRODUCT")
    psub.required = True
    e = psub.add_parser("ecs", help="the ECS API (2014-05-26), signed requests from the real SDK",
                        description="Serves the ECS RPC API until interrupted. Admin: GET /_admin/state, "
                        "GET|DELETE /_admin/calls, GET|POST|DELETE /_admin/faults, GET /_admin/ecs/prices, "
                        "POST /_admin/ecs/stock, POST /_admin/ecs/quotas.")
    e.add_argument("--listen", default="127.0.0.1:8760", help="HOST:PORT (port 0 picks a free one)")
    e.add_argument("--access-key", action="append", default=[], metavar="ID:SECRET",
                   help="accepted key pair (repeatable; default local:local-secret)")
    e.add_argument("--state", metavar="FILE", help="persist instances here (atomic writes); reloaded at start")
    e.add_argument("--boot-delay", default="20s", help="time from RunInstances to Running (default 20s)")
    e.add_argument("--stop-delay", default="1s", help="time spent Stopping after StopInstances (default 1s)")
    e.add_argument("--address-pool", default="127.0.1.0/24", help="loopback CIDR instances get addresses from")
    e.add_argument("--docker-endpoint", default="tcp://127.0.0.1:2376",
                   help="shared-engine nodes: every instance's Docker endpoint (the local engine's mutual-TLS one)")
    e.add_argument("--node-engine", metavar="URL",
                   help="booted nodes: every instance is a Debian machine (systemd, cloud-init running the "
                   "UserData) on this Docker Engine, e.g. unix:///var/lib/burst-controller-dev/docker.sock")
    e.add_argument("--vswitch", action="append", default=[], metavar="ID=CIDR",
                   help="booted nodes: a VSwitch and its CIDR (repeatable); instances get addresses there")
    e.add_argument("--price", action="append", default=[], metavar="TYPE=CNY_PER_HOUR",
                   help="offer TYPE at this hourly price (repeatable; adds to the built-in list)")
    e.add_argument("--quota", action="append", default=[], metavar="TYPE|*=N",
                   help="at most N live instances of TYPE (or in total with *)")
    e.add_argument("--stock", action="append", default=[], metavar="[ZONE/]TYPE|ZONE=N",
                   help="only N instances left of that offering")
    e.add_argument("--slb", action="store_true",
                   help="also serve the SLB API (2014-05-15) on this endpoint, for a policy whose traffic goes to "
                   "an SLB; create load balancers with POST /_admin/slb/load-balancers")
    e.add_argument("--cr-instance", action="append", default=[], metavar="ID=USER:PASSWORD_FILE",
                   help="also serve Container Registry's GetAuthorizationToken for instance ID, answering this "
                   "registry user and the password in PASSWORD_FILE (repeatable; for cloud_registry.auth acr)")
    f = e.add_argument_group("fault injection (also settable with POST /_admin/faults)")
    f.add_argument("--throttle-rate", type=float, default=0.0, help="fraction of calls answered Throttling")
    f.add_argument("--error-rate", type=float, default=0.0, help="fraction answered InternalError/ServiceUnavailable")
    f.add_argument("--latency", default="0s", help="delay added to every call")
    f.add_argument("--spike-rate", type=float, default=0.0, help="fraction of calls delayed by --spike")
    f.add_argument("--spike", default="2s", help="length of a latency spike (default 2s)")
    f.add_argument("--fault-actions", default="", help="comma-separated actions the faults above apply to")
    f.add_argument("--sold-out", action="append", default=[], metavar="TYPE|ZONE|ZONE/TYPE|spot",
                   help="answer OperationDenied.NoStock for this offering (repeatable)")
    f.add_argument("--unsupported", action="append", default=[], metavar="TYPE",
                   help="answer InvalidInstanceType.NotSupported for this type (repeatable)")
    f.add_argument("--timeout-after-create", type=int, default=0, metavar="N",
                   help="the next N RunInstances create their instances, then answer after --timeout-delay")
    f.add_argument("--timeout-after-create-rate", type=float, default=0.0)
    f.add_argument("--timeout-delay", default="120s", help="how late such an answer comes (default 120s)")
    f.add_argument("--seed", type=int, help="seed the fault dice (reproducible runs)")
    e.set_defaults(func=_run_ecs)
    n = psub.add_parser("node-images", help="build or list the emulator's node images (booted Debian machines)",
                        description="The ECS emulator's instances boot real Debian root file systems made with "
                        "debootstrap. `build` makes the missing ones (minutes, once per machine: cached by "
                        "content under $BURST_NODE_IMAGE_CACHE, default /var/cache/burst-controller/node-images); "
                        "`list` shows them.")
    n.add_argument("action", choices=("build", "list"))
    n.set_defaults(func=_node_images)


def _pairs(flag: str, values: list[str], problems: list[str], as_float: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    for raw in values:
        key, sep, num = raw.rpartition("=")
        try:
            if not sep or not key:
                raise ValueError
            out[key] = float(num) if as_float else int(num)
            if out[key] < 0:
                raise ValueError
        except ValueError:
            problems.append(f"{flag} {raw!r}: expected KEY=NUMBER with a non-negative number")
    return out


def build_emulator(args: argparse.Namespace) -> EcsEmulator:
    """The emulator the flags describe; every bad flag is reported at once as a ConfigError."""
    problems: list[str] = []
    host, _, port_text = str(args.listen).rpartition(":")
    if not host or not port_text.isdigit():
        problems.append(f"--listen {args.listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8760")
    keys: dict[str, str] = {}
    for raw in args.access_key:
        key_id, sep, secret = raw.partition(":")
        if not sep or not key_id or not secret:
            problems.append("--access-key: expected ID:SECRET")  # never echo the value: it holds a secret
        else:
            keys[key_id] = secret
    durations: dict[str, float] = {}
    for flag in ("boot_delay", "stop_delay", "latency", "spike", "timeout_delay"):
        try:
            durations[flag] = parse_duration(getattr(args, flag))
        except ValueError as exc:
            problems.append(f"--{flag.replace('_', '-')}: {exc}")
    prices = {**DEFAULT_PRICES, **_pairs("--price", args.price, problems, as_float=True)}
    vswitches: dict[str, str] = {}
    for raw in args.vswitch:
        vid, sep, cidr = raw.partition("=")
        try:
            net = ipaddress.ip_network(cidr, strict=False)
            if not sep or not vid or net.version != 4 or not 8 <= net.prefixlen <= 28:
                raise ValueError
            vswitches[vid] = str(net)
        except ValueError:
            problems.append(f"--vswitch {raw!r}: expected ID=CIDR with an IPv4 /8../28, e.g. vsw-a=10.214.1.0/24")
    if args.vswitch and not args.node_engine:
        problems.append("--vswitch needs --node-engine (VSwitches are where booted nodes get their addresses)")
    if args.node_engine and not vswitches:
        problems.append("--node-engine needs at least one --vswitch ID=CIDR")
    quotas = {k: int(v) for k, v in _pairs("--quota", args.quota, problems).items()}
    stock = {k: int(v) for k, v in _pairs("--stock", args.stock, problems).items()}
    for flag in ("throttle_rate", "error_rate", "spike_rate", "timeout_after_create_rate"):
        if not 0 <= getattr(args, flag) <= 1:
            problems.append(f"--{flag.replace('_', '-')}: must be within 0..1")
    logins = _cr_logins(args.cr_instance, problems)
    if problems:
        raise ConfigError("invalid emulator flags", [f"burstctl emulate ecs: {p}" for p in problems])
    faults = Faults(
        throttle_rate=args.throttle_rate, error_rate=args.error_rate, latency_s=durations["latency"],
        spike_rate=args.spike_rate, spike_s=durations["spike"],
        actions=[a.strip() for a in args.fault_actions.split(",") if a.strip()],
        sold_out=list(args.sold_out), unsupported=list(args.unsupported),
        timeout_after_create=args.timeout_after_create,
        timeout_after_create_rate=args.timeout_after_create_rate, timeout_delay_s=durations["timeout_delay"],
    )
    config = EcsConfig(boot_delay=durations["boot_delay"], stop_delay=durations["stop_delay"],
                       address_pool=args.address_pool, docker_endpoint=args.docker_endpoint, prices=prices,
                       quotas=quotas, stock=stock, state_file=args.state, node_engine=args.node_engine,
                       vswitches=vswitches)
    try:
        emulator = EcsEmulator(host=host, port=int(port_text), access_keys=keys or None, config=config,
                               faults=faults, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc), [f"burstctl emulate ecs: {exc}"]) from exc
    if args.slb:
        emulator.add_slb()
    if logins:
        emulator.add_cr(logins)
    return emulator


def _login(user: str, path: Path) -> tuple[str, str]:
    return user, path.read_text(encoding="utf-8").strip()


def _cr_logins(values: list[str], problems: list[str]) -> dict[str, Callable[[], tuple[str, str]]]:
    """``--cr-instance ID=USER:PASSWORD_FILE``: the file is read at each token request (a rotated password
    is answered at once); it must be readable now."""
    logins: dict[str, Callable[[], tuple[str, str]]] = {}
    for raw in values:
        instance, sep, rest = raw.partition("=")
        user, sep2, path = rest.partition(":")
        if not sep or not sep2 or not instance or not user or not path:
            problems.append(f"--cr-instance {raw!r}: expected ID=USER:PASSWORD_FILE")
            continue
        try:
            Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            problems.append(f"--cr-instance {instance}: cannot read {path}: {exc.strerror}")
            continue
        logins[instance] = functools.partial(_login, user, Path(path))
    return logins


def _run_ecs(args: argparse.Namespace) -> int:
    emulator = build_emulator(args)

    def _stop(signum: int, _frame: FrameType | None) -> None:
        emulator.server.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        url = emulator.start()
    except OSError as exc:
        raise ConfigError(str(exc), [f"burstctl emulate ecs: cannot listen on {args.listen}: {exc}"]) from exc
    nodes = (f"booted nodes on {', '.join(f'{k}={v}' for k, v in emulator.config.vswitches.items())}"
             if emulator.nodes is not None else f"docker {emulator.docker_endpoint}")
    print(f"ECS emulator listening on {url} (endpoint {emulator.endpoint}, {nodes})", flush=True)
    try:
        while not emulator.server.stopping.wait(0.5):
            pass
    finally:
        emulator.stop()
        print("ECS emulator stopped", file=sys.stderr, flush=True)
    return 0


def _node_images(args: argparse.Namespace) -> int:
    from lab.emulator.node_images import IMAGES, NodeImageCache

    cache = NodeImageCache()
    for recipe in dict.fromkeys(i.recipe for i in IMAGES):
        if args.action == "build":
            try:
                cache.ensure_built(recipe, say=lambda msg: print(msg, flush=True))
            except (OSError, RuntimeError) as exc:
                raise ConfigError("node image build failed", [f"burstctl emulate node-images: {exc}"]) from exc
    for image in IMAGES:
        state = "built" if cache.is_built(image.recipe) else "missing"
        print(f"{image.image_id:<40} {image.os_name:<32} {state:<8} {cache.tarball(image)}")
    return 0
