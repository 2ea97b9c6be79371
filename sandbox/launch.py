"""Start a local trial as an unprivileged user in its own mount and network namespace.

Run as root by the local backend (sandbox/local.py) as `python -I launch.py SPEC.json`; it
never returns: it execs the trial. What it sets up, in this order, using only the standard
library (the kernel's unshare/mount/prctl through ctypes):

1. a private mount namespace and an empty network namespace (only a loopback, down): the
   trial reaches no address, as in Docker with `network_disabled` (a preparation the user
   gave --prepare-network keeps the host's);
2. the binds of the spec (the trial's data, out/ and compile cache at their staging paths);
3. tmpfs over the folders that hold other users' files and secrets (/root, /home), and
   folders of the staging folder bound over the ones anyone may write (/tmp, /var/tmp,
   /dev/shm, /run/lock): what the trial writes there is counted by `--disk` and removed with
   the staging folder, and it sees no other program's (or trial's) temporary files;
4. the staging folder and the interpreter's folders that lived under the folders covered in
   3 bound back at their own paths (from descriptors opened before they were covered), so the
   same Python runs the same trial and nothing else of those folders is visible; so is, with
   the binds below it and writable, a preparation's out/ folder ("reveal"), which it sees at
   its own path;
5. no supplementary groups, the trial user's gid and uid, no new privileges, a seccomp filter
   that refuses new user namespaces (below), and SIGKILL on the death of the process that
   started it (PR_SET_PDEATHSIG, set after the uid change, which clears it);
6. exec of the trial in its out/ folder with exactly the environment of the spec.

Any failure before the exec prints `sandbox launch failed: ...` and exits 125.
"""

import ctypes
import json
import os
import signal
import struct
import sys

CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 1, 38, 22, 2

# Per architecture: the audit arch seccomp reports, and the numbers of unshare, clone, clone3
# and setns. Elsewhere no filter is installed (README, "Sandbox").
SYSCALLS = {"x86_64": (0xC000003E, 272, 56, 435, 308),
            "aarch64": (0xC00000B7, 97, 220, 435, 268)}
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
EPERM, ENOSYS = 1, 38
LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06

libc = ctypes.CDLL(None, use_errno=True)


def _call(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    _call(libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(),
                     flags, data and data.encode()), f"mount {source or ''} on {target}")


def bind(source, target, writable):
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    elif not os.path.exists(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    if not writable:
        _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def no_user_namespaces(machine):
    """A seccomp filter: unshare and clone with CLONE_NEWUSER and every setns fail with EPERM;
    clone3, whose flags sit in memory a filter cannot read, fails with ENOSYS, on which glibc
    falls back to clone; so does any call through another entry (x86-64's 32-bit int 0x80 and
    x32), whose numbers differ. Inherited by every process the trial starts."""
    arch, unshare, clone, clone3, setns = SYSCALLS[machine]
    deny, enosys = RET_ERRNO | EPERM, RET_ERRNO | ENOSYS
    # (code, jump if true, jump if false, k); jumps count the instructions skipped
    program = [
        (LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (JEQ, 1, 0, arch),
        (RET, 0, 0, enosys),
        (LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (JGE, 0, 1, 0x40000000),  # x32
        (RET, 0, 0, enosys),
        (JEQ, 0, 1, clone3),
        (RET, 0, 0, enosys),
        (JEQ, 0, 1, setns),
        (RET, 0, 0, deny),
        (JEQ, 2, 0, unshare),
        (JEQ, 1, 0, clone),
        (RET, 0, 0, RET_ALLOW),
        (LD_W_ABS, 0, 0, 16),  # the low half of seccomp_data.args[0]: the flags of both
        (JSET, 0, 1, CLONE_NEWUSER),
        (RET, 0, 0, deny),
        (RET, 0, 0, RET_ALLOW),
    ]
    code = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *op) for op in program))
    prog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(code))
    _call(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.create_string_buffer(prog),
                     0, 0), "seccomp")


def _under(path, folders):
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    _call(libc.unshare(CLONE_NEWNS | (CLONE_NEWNET if spec.get("no_network") else 0)),
          "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for source, target, writable in spec["binds"]:
        bind(source, target, writable)
    private = [(backing, folder) for backing, folder in spec["private"] if os.path.isdir(folder)]
    covered = spec["hide"] + [folder for _, folder in private]
    # Opened in this namespace, before anything is covered: a bind from a descriptor still
    # reaches a folder once its path leads somewhere else.
    reveal = spec.get("reveal", [])
    held = {path: os.open(path, os.O_PATH) for path in
            [spec["stage"], *spec["keep"], *reveal, *(backing for backing, _ in private)]
            if os.path.exists(path)}
    for folder in spec["hide"]:
        if os.path.isdir(folder):
            _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for backing, folder in private:
        bind(f"/proc/self/fd/{held[backing]}", folder, True)
    stage = spec["stage"]
    if _under(stage, covered):  # with the binds made in 2 below it
        os.makedirs(stage, exist_ok=True)
        _mount(f"/proc/self/fd/{held[stage]}", stage, None, MS_BIND | MS_REC)
    for path in spec["keep"]:
        if path in held and _under(path, covered):
            bind(f"/proc/self/fd/{held[path]}", path, False)
    for path in reveal:
        if path in held and _under(path, covered):
            bind(f"/proc/self/fd/{held[path]}", path, True)
    for fd in held.values():
        os.close(fd)
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    _call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    machine = os.uname().machine
    if machine in SYSCALLS:
        no_user_namespaces(machine)
    _call(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
    if os.getppid() != spec["parent"]:  # the session died before the line above
        os._exit(137)
    os.chdir(spec["cwd"])
    os.execve(spec["argv"][0], spec["argv"], spec["env"])


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception as e:  # anything before the exec: one line, a distinct exit code
        print(f"sandbox launch failed: {e}", file=sys.stderr, flush=True)
        os._exit(125)
