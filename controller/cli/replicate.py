"""`burstctl replicate SRC DST`: copy an image (by digest, only what is missing) from the on-prem registry
or the local Docker Engine to the cloud registry, with a progress bar on a terminal, one line per layer
otherwise, or one JSON object with --json. The daemon uses the same Replicator for pre-replication."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import Any

from adapters.registry.auth import Credentials, StaticCredentials
from adapters.registry.client import RegistryOptions
from adapters.registry.imageref import LocalImageRef, parse_image
from adapters.registry.replication import Replicator
from controller.errors import ConfigError
from controller.ports import CopyResult


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replicate", help="copy an image to another registry (only what is missing)",
        description="Copy SRC to DST by digest. SRC is HOST[:PORT]/REPO[:TAG|@DIGEST], or docker-daemon:NAME "
                    "(or a name without a registry host) for an image in the local Docker Engine.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dst", metavar="DST", help="HOST[:PORT]/REPO[:TAG]; the tag defaults to the source's")
    p.add_argument("--platform", action="append", default=[], metavar="OS/ARCH[/VARIANT]",
                   help="copy only these platforms of a manifest list / OCI index (repeatable; default all)")
    p.add_argument("--json", action="store_true", help="print one JSON object with the result")
    for side in ("src", "dst"):
        g = p.add_mutually_exclusive_group()
        g.add_argument(f"--{side}-creds", metavar="USER:PASS",
                       help=f"credentials for the {side} registry (visible in ps: prefer --{side}-creds-env)")
        g.add_argument(f"--{side}-creds-env", metavar="VAR", help="environment variable holding USER:PASS")
    p.add_argument("--dst-acr-instance", metavar="INSTANCE_ID",
                   help="get a temporary ACR Enterprise token for DST (AccessKey from ALIBABA_CLOUD_ACCESS_KEY_ID "
                        "and ALIBABA_CLOUD_ACCESS_KEY_SECRET)")
    p.add_argument("--acr-region", metavar="REGION", default=os.environ.get("ALIBABA_CLOUD_REGION_ID", ""),
                   help="region of the ACR instance")
    p.add_argument("--acr-endpoint", metavar="URL",
                   help="the ACR API endpoint (default: the region's public one; e.g. a VPC endpoint)")
    p.add_argument("--insecure", action="append", default=[], metavar="HOST[:PORT]",
                   help="speak plain HTTP to this registry (loopback registries always are)")
    p.add_argument("--ca-file", help="extra CA bundle for registries with private certificates")
    p.add_argument("--concurrency", type=int, default=6, help="blobs copied at once (default 6)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="BYTES",
                   help="upload in PATCH chunks of this size instead of one streamed PUT")
    p.set_defaults(func=run)


def _creds(value: str | None, env: str | None, flag: str) -> Credentials | None:
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"--{flag}-env: environment variable {env} is not set")
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise ConfigError(f"--{flag}: expected USER:PASS")
    return Credentials(user, password)


def build_replicator(args: argparse.Namespace) -> Replicator:
    store = StaticCredentials()
    creds_src = _creds(args.src_creds, args.src_creds_env, "src-creds")
    creds_dst = _creds(args.dst_creds, args.dst_creds_env, "dst-creds")
    src, dst = parse_image(args.src), parse_image(args.dst)
    if creds_src and not isinstance(src, LocalImageRef):
        store.add(src.host, creds_src)
    if isinstance(dst, LocalImageRef):
        raise ConfigError(f"DST {args.dst!r} must name a registry: HOST[:PORT]/REPOSITORY[:TAG]")
    credentials: Any = store
    if creds_dst:
        store.add(dst.host, creds_dst)
    elif args.dst_acr_instance:
        from adapters.aliyun.acr import AcrTokenCredentials

        credentials = AcrTokenCredentials.from_env(args.dst_acr_instance, args.acr_region, (dst.host,),
                                                   endpoint=args.acr_endpoint, fallback=store)
    if args.concurrency < 1:
        raise ConfigError("--concurrency must be at least 1")
    options = RegistryOptions(credentials=credentials, insecure_hosts=frozenset(args.insecure),
                              ca_file=args.ca_file, concurrency=args.concurrency, chunk_size=args.chunk_size)
    return Replicator(options)


def run(args: argparse.Namespace) -> int:
    replicator = build_replicator(args)
    try:
        if args.json:
            result = replicator.replicate(args.src, args.dst, args.platform or None,
                                          listener=_LineLog(sys.stderr) if not sys.stderr.isatty() else None)
            print(json.dumps({"digest": result.digest, "copied_blobs": result.copied_blobs,
                              "skipped_blobs": result.skipped_blobs, "mounted_blobs": result.mounted_blobs,
                              "bytes_copied": result.bytes_copied, "seconds": result.seconds}))
        elif sys.stdout.isatty():
            result = _with_bar(replicator, args)
            _summary(result, args.dst)
        else:
            result = replicator.replicate(args.src, args.dst, args.platform or None, listener=_LineLog(sys.stdout))
            _summary(result, args.dst)
    finally:
        replicator.close()
    return 0


def _summary(result: CopyResult, dst: str) -> None:
    print(f"{dst} is {result.digest}: {result.copied_blobs} copied, {result.skipped_blobs} already present, "
          f"{result.mounted_blobs} mounted, {_size(result.bytes_copied)} in {result.seconds:.2f}s")


class _LineLog:
    """One line per blob as it completes, for logs and pipes."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, digest: str, size: int, kind: str) -> None:
        with self._lock:
            print(f"{kind:8} {digest} {_size(size)}", file=self._out, flush=True)


def _with_bar(replicator: Replicator, args: argparse.Namespace) -> CopyResult:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    lock = threading.Lock()
    done_by_blob: dict[str, int] = {}
    total_by_blob: dict[str, int] = {}
    finished = [0]
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task("layers 0 done", total=None)

        def refresh() -> None:
            bar.update(task, total=sum(total_by_blob.values()), completed=sum(done_by_blob.values()),
                       description=f"layers {finished[0]} done")

        def progress(digest: str, done: int, total: int) -> None:
            with lock:
                done_by_blob[digest], total_by_blob[digest] = done, total
                refresh()

        def listener(digest: str, size: int, kind: str) -> None:
            with lock:
                finished[0] += 1
                done_by_blob[digest] = total_by_blob[digest] = max(size, total_by_blob.get(digest, 0))
                refresh()

        return replicator.replicate(args.src, args.dst, args.platform or None, progress=progress,
                                    listener=listener)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover
