"""OS users a run may execute as: who they are (uid, groups, home) and what they can reach.

Which flow may run as which user is the server's decision (the daemon's config,
daemon/settings.py); this module only describes users and the files they can read.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from puppemon.errors import PuppemonError


@dataclass(frozen=True)
class OSUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def env(self) -> dict[str, str]:
        """What a login gives a process of this user (as systemd's User= does)."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def lookup(name: str) -> OSUser:
    """The OS user `name`; PuppemonError when this machine has none."""
    import grp
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise PuppemonError(f"there is no OS user {name!r} on this machine (create it, or change the grant)") from None
    groups = {entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)}
    return OSUser(name, entry.pw_uid, entry.pw_gid, tuple(sorted(groups)), entry.pw_dir)


def current_name() -> str:
    """The name of the user this process runs as."""
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def blocked(user: OSUser, path: str | os.PathLike, execute: bool = False) -> str | None:
    """None when `user` may reach `path` and read it (run it, with `execute`) by the mode bits; else the
    directory or file that stops it (ACLs aside: this is for a clear early message, not a guard)."""
    path = Path(os.path.realpath(path))
    for step in [*reversed(path.parents), path]:
        try:
            st = os.stat(step)
        except OSError:
            return str(step)
        if step != path:
            need = stat.S_IXOTH
        elif stat.S_ISDIR(st.st_mode):
            need = stat.S_IROTH | stat.S_IXOTH
        else:
            need = stat.S_IXOTH if execute else stat.S_IROTH
        if st.st_uid == user.uid:
            need <<= 6
        elif st.st_gid in user.groups:
            need <<= 3
        if st.st_mode & need != need:
            return str(step)
    return None


def hand_over(root: Path, user: OSUser) -> None:
    """Make `root` and everything below it (symlinks themselves included) belong to `user`."""
    os.lchown(root, user.uid, user.gid)
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.lchown(os.path.join(directory, name), user.uid, user.gid)
