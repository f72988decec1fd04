"""What the ECS emulator can tell about an instance beyond what RunInstances said: the vCPUs, memory and
family of its type, the operating system named by a public image id, the names of a batch (``UniqueSuffix``
and the ``name[begin,bits]`` pattern, as the real RunInstances applies them), the default host name, and
per-instance ids derived from the instance id (primary ENI, MAC address, serial number), so they are stable
across calls and restarts without being stored. ``ecs.py`` renders DescribeInstances with them."""

from __future__ import annotations

import functools
import hashlib
import re
import uuid

__all__ = ["INSTANCE_TYPES", "default_host_name", "derived_ids", "instance_type_facts", "os_facts",
           "sequential_name"]

# type -> (InstanceTypeFamily, vCPUs, memory in MiB): the types of DEFAULT_PRICES, as Alibaba lists them
INSTANCE_TYPES: dict[str, tuple[str, int, int]] = {
    "ecs.t6-c1m1.large": ("ecs.t6", 2, 2048),
    "ecs.c6.large": ("ecs.c6", 2, 4096),
    "ecs.g6.large": ("ecs.g6", 2, 8192),
    "ecs.c7.large": ("ecs.c7", 2, 4096),
    "ecs.g7.large": ("ecs.g7", 2, 8192),
    "ecs.r7.large": ("ecs.r7", 2, 16384),
    "ecs.c7.xlarge": ("ecs.c7", 4, 8192),
    "ecs.g7.xlarge": ("ecs.g7", 4, 16384),
    "ecs.c7.2xlarge": ("ecs.c7", 8, 16384),
    "ecs.g7.2xlarge": ("ecs.g7", 8, 32768),
}
# GiB per vCPU of the general families: compute (c), general purpose (g), memory (r)
_GIB_PER_VCPU = {"c": 2, "g": 4, "r": 8}
_TYPE = re.compile(r"^ecs\.(?P<family>[a-z]+\d*[a-z]*)(?:-c1m(?P<ratio>\d+))?\.(?P<size>(?P<n>\d*)xlarge|large)$")


@functools.cache
def instance_type_facts(itype: str) -> tuple[str, int, int] | None:
    """(family, vCPUs, memory MiB) of a type: the table, else read off a regular name such as ``ecs.g8i.4xlarge``
    (``--price`` can offer any type); None when the name says nothing (the fields are then left out)."""
    if itype in INSTANCE_TYPES:
        return INSTANCE_TYPES[itype]
    m = _TYPE.match(itype)
    if m is None:
        return None
    cpus = 2 if m["size"] == "large" else 4 * int(m["n"] or 1)
    per_cpu = int(m["ratio"]) if m["ratio"] else _GIB_PER_VCPU.get(m["family"][0])
    if per_cpu is None:
        return None
    return f"ecs.{m['family']}", cpus, cpus * per_cpu * 1024


_DISTROS = {
    "aliyun": "Alibaba Cloud Linux", "debian": "Debian", "ubuntu": "Ubuntu", "centos": "CentOS",
    "rockylinux": "Rocky Linux", "almalinux": "AlmaLinux", "anolisos": "Anolis OS", "fedora": "Fedora",
    "opensuse": "openSUSE", "suse": "SUSE Linux Enterprise Server", "freebsd": "FreeBSD",
}
_IMAGE = re.compile(r"^(?P<distro>[a-z]+)_(?P<version>\d+(?:_\d+)*)_(?P<arch>x64|x32|arm64)_")
_WINDOWS = re.compile(r"^win(?P<year>\d{4})_")


@functools.cache
def os_facts(image_id: str) -> tuple[str, str, str]:
    """(OSName, OSNameEn, OSType) of a public image id (``debian_12_5_x64_20G_alibase_20240401.vhd`` ->
    ``Debian 12.5 64位``). The emulator accepts any image id; one that names no known system gets empty names
    (its instances are Linux either way)."""
    win = _WINDOWS.match(image_id)
    if win:
        name = f"Windows Server {win['year']}"
        return f"{name} 64位", f"{name} 64 bit", "windows"
    m = _IMAGE.match(image_id)
    if m is None or m["distro"] not in _DISTROS:
        return "", "", "linux"
    name = f"{_DISTROS[m['distro']]} {m['version'].replace('_', '.')}"
    bits, bits_en = {"x64": ("64位", "64 bit"), "x32": ("32位", "32 bit"),
                     "arm64": ("64位 ARM版", "64 bit ARM Edition")}[m["arch"]]
    return f"{name} {bits}", f"{name} {bits_en}", "linux"


_SEQUENCE = re.compile(r"\[(?P<begin>\d*),(?P<bits>\d*)\]")


def sequential_name(pattern: str, index: int, amount: int, unique_suffix: bool) -> str:
    """The name (or host name) of instance ``index`` (0-based) of a RunInstances call of ``amount``:
    ``prefix[begin,bits]suffix`` counts from ``begin`` with ``bits`` digits (defaults 0 and 6); otherwise,
    with ``UniqueSuffix=true`` and more than one instance, ``001``, ``002``... are appended; otherwise every
    instance gets the name as given."""
    if not pattern:
        return pattern
    m = _SEQUENCE.search(pattern)
    if m is not None:
        number = int(m["begin"] or 0) + index
        name = f"{pattern[:m.start()]}{number:0{int(m['bits'] or 6)}d}{pattern[m.end():]}"
        # UniqueSuffix only takes effect when the pattern has a suffix after the brackets
        if unique_suffix and amount > 1 and pattern[m.end():]:
            name += f"{index + 1:03d}"
        return name
    return f"{pattern}{index + 1:03d}" if unique_suffix and amount > 1 else pattern


def default_host_name(instance_id: str) -> str:
    """What ECS names a host that RunInstances gave no HostName: ``iZ<id without i->Z``."""
    return f"iZ{instance_id.removeprefix('i-')}Z"


@functools.lru_cache(maxsize=65536)  # PERF: a listing of 5,000 instances renders each one per page read
def derived_ids(instance_id: str) -> tuple[str, str, str]:
    """(primary ENI id, MAC address, serial number) of an instance: stable, unique per instance id."""
    digest = hashlib.sha256(instance_id.encode()).hexdigest()
    mac = "00:16:3e:" + ":".join(digest[i:i + 2] for i in (20, 22, 24))  # 00:16:3e is Alibaba's prefix
    return f"eni-{digest[:20]}", mac, str(uuid.uuid5(uuid.NAMESPACE_URL, f"ecs-emulator:{instance_id}"))
