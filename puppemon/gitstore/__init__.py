"""Every git operation puppemon does; the only package that imports pygit2 or runs git.

Local objects and refs go through pygit2 (store.py); fetch and push run the git
binary (command.py), so the user's ssh config, agent, credential helpers and CI
credentials apply; worktree.py turns directories into trees and back.
"""
from puppemon.gitstore.command import (GitError, PushRejected, RefConflict, RemoteMissingRef, git_env,  # noqa: F401
                                       git_message, run_git)
from puppemon.gitstore.store import (EMPTY_TREE, EXEC, FILE, GITLINK, LINK, TREE, Change, Commit, Entry,  # noqa: F401
                                     Store, TooLarge, signature)
