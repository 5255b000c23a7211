"""Paths as a targeted process sees them: its open files, and a folder's name inside its root.

A rule names paths as the pod's spec does; the kernel reports them resolved (`bpf_d_path`,
/proc/PID/fd): a volume mounted at /var/run/etcd, where the image has /var/run -> /run, is
/run/etcd to every hook. Reads only /proc; no BPF here.
"""
import os
import stat

from kfault_api import layout

MAX_LINKS = 40          # as the kernel's path walk (ELOOP)


def open_paths(tgid):
    """(fd, absolute path, is a directory) of each file `tgid` has open, and (AT_FDCWD, its
    working directory, True): what it opened before we armed, as it sees it (in its own mount
    namespace: so the type comes from the /proc link itself, not from our view of the path)."""
    entries = []
    try:
        fds = os.listdir(f"/proc/{tgid}/fd")
    except OSError:
        return entries
    for fd, link in [(layout.IO_AT_FDCWD, f"/proc/{tgid}/cwd")] + [(int(fd), f"/proc/{tgid}/fd/{fd}") for fd in fds]:
        try:
            path = os.readlink(link)
            if path.startswith("/") and not path.endswith(" (deleted)"):   # not pipe:[..], socket:[..]
                entries.append((fd, path, stat.S_ISDIR(os.stat(link).st_mode)))
        except OSError:
            continue                  # closed meanwhile
    return entries


def resolve_in_root(tgid, path):
    """The absolute `path` with every symbolic link in it followed as `tgid` would, inside its
    own root and mount namespace (an absolute link starts again from that root, never ours), or
    None if it can't be read. A part that doesn't exist (yet) is kept as written. It walks by
    directory fds, each opened without following a link: a process that swaps a folder for a
    link while we walk can't send the walk out of its root."""
    try:
        root = os.open(f"/proc/{tgid}/root", os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return None
    todo = [part for part in path.split("/") if part]
    folders, names, links = [root], [], 0      # folders[i + 1] is names[i], opened
    try:
        while todo:
            part = todo.pop(0)
            if part == ".":
                continue
            if part == "..":
                if names:
                    os.close(folders.pop())
                    names.pop()
                continue
            try:
                target = os.readlink(part, dir_fd=folders[-1])
            except FileNotFoundError:
                return "/" + "/".join(names + [part] + todo)
            except OSError:             # EINVAL: not a link
                try:
                    folders.append(os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folders[-1]))
                except OSError:         # a file (ENOTDIR), or gone meanwhile: as written from here
                    return "/" + "/".join(names + [part] + todo)
                names.append(part)
                continue
            links += 1
            if links > MAX_LINKS:
                return None
            if target.startswith("/"):
                while names:
                    os.close(folders.pop())
                    names.pop()
            todo = [p for p in target.split("/") if p] + todo
        return "/" + "/".join(names)
    finally:
        for fd in folders:
            os.close(fd)


def folder_names(tgids, folder):
    """`folder` as each distinct root and mount namespace among `tgids` resolves it."""
    names, seen = set(), set()
    for tgid in tgids:
        try:
            root, mounts = os.stat(f"/proc/{tgid}/root"), os.stat(f"/proc/{tgid}/ns/mnt")
        except OSError:
            continue                # gone
        view = (root.st_dev, root.st_ino, mounts.st_ino)
        if view not in seen:
            seen.add(view)
            name = resolve_in_root(tgid, folder)
            if name:
                names.add(name)
    return names
