"""Start a local trial as an unprivileged user in its own mount and network namespace.

Run as root by the local backend (sandbox/local.py) as `python -I launch.py SPEC.json`; it
never returns: it execs the trial. What it sets up, in this order, using only the standard
library (the kernel's unshare/mount through ctypes):

1. a private mount namespace and an empty network namespace (only a loopback, down): the
   trial reaches no address, as in Docker with `network_disabled`;
2. the binds of the spec (the trial's data, out/ and compile cache at their staging paths);
3. tmpfs over the folders that hold other users' files and secrets (/root, /home), then the
   interpreter's folders that lived under them bound back read-only at their own paths, so
   the same Python runs and nothing else of those folders is visible;
4. no supplementary groups, the trial user's gid and uid, no new privileges, and SIGKILL on
   the death of the process that started it (PR_SET_PDEATHSIG, set after the uid change,
   which clears it);
5. exec of the trial in its out/ folder with exactly the environment of the spec.

Any failure before the exec prints `sandbox launch failed: ...` and exits 125.
"""

import ctypes
import json
import os
import signal
import sys

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

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


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    _call(libc.unshare(CLONE_NEWNS | (CLONE_NEWNET if spec.get("no_network") else 0)),
          "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for source, target, writable in spec["binds"]:
        bind(source, target, writable)
    stash = spec["stash"]
    kept = []
    for i, path in enumerate(spec["keep"]):  # reachable again after the folders are hidden
        if os.path.exists(path):
            bind(path, os.path.join(stash, str(i)), False)
            kept.append((os.path.join(stash, str(i)), path))
    for folder in spec["hide"]:
        if os.path.isdir(folder):
            _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for source, path in kept:
        bind(source, path, False)
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    _call(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
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
