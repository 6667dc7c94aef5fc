"""Every git operation puppemon does; the only package that imports pygit2 or runs git.

Local objects and refs go through pygit2 (store.py); fetch and push run the git
binary (command.py, transport.py), so the user's ssh config, agent, credential
helpers and CI credentials apply; worktree.py turns directories into trees and back;
plumbing.py is a working tree through git processes alone, for `puppemon push`.

pygit2 costs a CLI tens of milliseconds to import, so this package loads store.py
(and pygit2) when one of its names is first used, not when the package is imported:
`from puppemon.gitstore import Store` loads it, `from puppemon.gitstore import GitError`
does not. This is the one place that decision is made.
"""
from puppemon.gitstore.command import (GitError, PushRejected, RefConflict, RemoteMissingRef, git_env,  # noqa: F401
                                       git_message, run_git)
from puppemon.gitstore.objects import (EMPTY_TREE, EXEC, FILE, GITLINK, LINK, TREE, Change, Commit, Entry,  # noqa: F401
                                       TooLarge)

_FROM_STORE = ("Store", "signature")


def __getattr__(name: str):
    if name in _FROM_STORE:
        from puppemon.gitstore import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
