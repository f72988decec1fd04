"""The status process gives up what it does not need before it serves (called by controller/status/child.py):
its supplementary groups (under the unit the daemon's include ``docker``, which is root-equivalent on the
host), its capabilities (none under the unit; all when run as root by hand), the right to gain any back
(``no_new_privs``), and, through a seccomp filter, the means to reach what the groups opened: no new
Unix socket (the Docker socket is one), no ptrace or reading another process's memory (the daemon, same
user, holds the cloud credentials and the Docker client), no io_uring (it would bypass the filter).

Under the unit the groups can only be dropped with CAP_SETGID and the ``setgroups`` call, which the unit
grants only where the service user is in the docker group (deploy/burst-controller-docker-group.conf, installed
with the membership by deploy/install.sh). The daemon receives CAP_SETGID as an ambient capability, lowers it
from its own effective set at once (``shield_daemon``) and only passes it on to the status process, which
drops the groups and then every capability. Without that drop-in the groups stay listed in /proc/PID/status,
and the filter is what keeps the Docker socket out of reach.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import struct

__all__ = ["confine", "shield_daemon"]

logger = logging.getLogger(__name__)

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000
_NR = {"socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "io_uring_setup": 425}
_AF_UNIX = 1
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_LD_ABS_W, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_PR_SET_DUMPABLE, _PR_GET_DUMPABLE = 4, 3


def _filter() -> bytes:
    """x86-64 BPF: socket(AF_UNIX, ...) -> EACCES; ptrace, process_vm_readv/writev, io_uring_setup and any
    x32 call -> EPERM; everything else allowed (the unit's own filter still applies)."""
    deny_unix = _RET_ERRNO | errno.EACCES
    deny = _RET_ERRNO | errno.EPERM
    prog = [
        (_LD_ABS_W, 0, 0, 4),  # 0: arch
        (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64),  # 1: x86-64 -> 3
        (_RET_K, 0, 0, _RET_ALLOW),  # 2: another arch: this filter does not know its numbers
        (_LD_ABS_W, 0, 0, 0),  # 3: syscall number
        (_JGE_K, 8, 0, _X32_BIT),  # 4: x32 -> 13
        (_JEQ_K, 0, 2, _NR["socket"]),  # 5: socket -> 6, else -> 8
        (_LD_ABS_W, 0, 0, 16),  # 6: args[0] (the address family), low half
        (_JEQ_K, 6, 4, _AF_UNIX),  # 7: AF_UNIX -> 14, else -> 12
        (_JEQ_K, 4, 0, _NR["ptrace"]),  # 8: -> 13
        (_JEQ_K, 3, 0, _NR["process_vm_readv"]),  # 9: -> 13
        (_JEQ_K, 2, 0, _NR["process_vm_writev"]),  # 10: -> 13
        (_JEQ_K, 1, 0, _NR["io_uring_setup"]),  # 11: -> 13
        (_RET_K, 0, 0, _RET_ALLOW),  # 12
        (_RET_K, 0, 0, deny),  # 13
        (_RET_K, 0, 0, deny_unix),  # 14
    ]
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def shield_daemon() -> bool:
    """For the daemon (``burstctl run``), before it starts the status process: not dumpable, so that another
    process of the same user (the status process) cannot read its memory, environment or open files through
    /proc (they become root's), and no core dump carries its credentials. Its effective capabilities are
    lowered (a capability it holds only to pass on, CAP_SETGID under the unit, stays permitted, inheritable
    and ambient, so the status process receives it). True when not dumpable took effect."""
    libc = ctypes.CDLL(None, use_errno=True)
    _lower_effective(libc)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        logger.warning("could not make the controller's process undumpable: %s", os.strerror(ctypes.get_errno()))
    return int(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0)) == 0


_CAP_V3 = 0x20080522


def _lower_effective(libc: ctypes.CDLL) -> None:
    """Effective capabilities: none; permitted and inheritable (and so the ambient set) unchanged. Only when
    not root: root's capabilities come from its uid, which the daemon does not give up (run by hand)."""
    if os.geteuid() == 0:
        return
    header = struct.pack("=Ii", _CAP_V3, 0)
    data = ctypes.create_string_buffer(24)
    if libc.capget(ctypes.c_char_p(header), data) != 0:
        return
    words = list(struct.unpack("=6I", data.raw))  # (effective, permitted, inheritable) x 2
    if words[0] == 0 and words[3] == 0:
        return
    words[0] = words[3] = 0
    if libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(struct.pack("=6I", *words))) != 0:
        logger.warning("could not lower the controller's effective capabilities: %s", os.strerror(ctypes.get_errno()))


def _held_capabilities() -> bool:
    with open("/proc/self/status") as f:
        return any(line.startswith("CapPrm:") and int(line.split()[1], 16) != 0 for line in f)


def confine() -> list[str]:
    """Drop what can be dropped; returns what could not (for one log line). Never raises."""
    missed: list[str] = []
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        os.setgroups([])
    except OSError:
        if os.getgroups():
            missed.append(f"supplementary groups {os.getgroups()} (no CAP_SETGID: the seccomp filter keeps "
                          "the Docker socket out; deploy/install.sh installs a drop-in that grants it with the "
                          "docker group)")
    # capset(v3, all zero): nothing effective, permitted or inheritable
    header = struct.pack("=Ii", _CAP_V3, 0)
    data = bytes(24)
    if libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)) != 0 and _held_capabilities():
        missed.append(f"capabilities ({os.strerror(ctypes.get_errno())})")
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        missed.append(f"no_new_privs ({os.strerror(ctypes.get_errno())})")
        return missed  # a filter needs it
    if platform.machine() not in ("x86_64", "AMD64"):
        missed.append(f"seccomp filter (written for x86-64, this is {platform.machine()})")
        return missed
    code = _filter()
    buf = ctypes.create_string_buffer(code)
    prog = struct.pack("=HxxxxxxQ", len(code) // 8, ctypes.addressof(buf))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.c_char_p(prog), 0, 0) != 0:
        missed.append(f"seccomp filter ({os.strerror(ctypes.get_errno())})")
    return missed
