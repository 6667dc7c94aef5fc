"""Run and cancel requests on the runs branch: `puppemon trigger`, `puppemon cancel`, claims."""
from __future__ import annotations

from puppemon.gitstore import Store
from puppemon.recorder import Recorder
from tests.conftest import git


def test_replay_drops_a_commit_whose_path_the_remote_already_has_with_other_content(tmp_path, bare_remote):
    a = Recorder(Store.open_or_init_bare(tmp_path / "a.git"), remote=str(bare_remote))
    b = Recorder(Store.open_or_init_bare(tmp_path / "b.git"), remote=str(bare_remote))
    a.add({"seed.json": b"{}\n"}, "seed\n")
    assert a.publish()
    b.sync()
    a.add({"requests/2026/11/25/r1.claim.json": b"a\n"}, "claim by a\n")
    b.add({"requests/2026/11/25/r1.claim.json": b"b\n"}, "claim by b\n")
    b.add({"other.json": b"b\n"}, "unrelated\n")
    b.add({"same.json": b"x\n"}, "same content as a\n")
    a.add({"same.json": b"x\n"}, "same content as b\n")
    assert a.publish() and b.publish()
    remote = Store(bare_remote)
    tip = remote.ref("refs/heads/runs")
    assert remote.read(tip, "requests/2026/11/25/r1.claim.json") == b"a\n"
    assert remote.read(tip, "other.json") == b"b\n"
    assert b.dropped == ["claim by b\n"]
    log = git("--git-dir", str(bare_remote), "log", "--format=%s", "runs").splitlines()
    assert log == ["same content as a", "unrelated", "same content as b", "claim by a", "seed"]
    assert b.store.ref("refs/heads/runs") == tip
