"""One typed wrapper per Lua script in ``chatlane/lua``; each is its script's only caller.

A wrapper takes its arguments by name, builds the KEYS and ARGV lists the script's header
describes, and turns the script's answer into a typed value or a typed error.
"""

from chatlane.scripts.advance import Advance, AttemptEnd, Finish, Next
from chatlane.scripts.attempt_ended import AttemptEnded
from chatlane.scripts.budget import BudgetAcquire, BudgetPause, BudgetRelease, Granted, Limits, Wait, Wake
from chatlane.scripts.cancel import Cancel
from chatlane.scripts.claim import Claim, Claimed
from chatlane.scripts.delete_session import Deleted, DeleteSession
from chatlane.scripts.enqueue import Accepted, Duplicate, Enqueue, Joined
from chatlane.scripts.expire import Expire
from chatlane.scripts.handback import Handback
from chatlane.scripts.history_page import HistoryPageRead, RawPage
from chatlane.scripts.import_session import Imported, ImportSession
from chatlane.scripts.renew import Renew, Renewal
from chatlane.scripts.replication import Replication
from chatlane.scripts.save_summary import SaveSummary
from chatlane.scripts.steps import Begun, Deferred, Released, Step, Stopped, StopRequested
from chatlane.scripts.sweep import Sweep

__all__ = [
    "Accepted",
    "Advance",
    "AttemptEnd",
    "AttemptEnded",
    "Begun",
    "BudgetAcquire",
    "BudgetPause",
    "BudgetRelease",
    "Cancel",
    "Claim",
    "Claimed",
    "Deferred",
    "DeleteSession",
    "Deleted",
    "Duplicate",
    "Enqueue",
    "Expire",
    "Finish",
    "Granted",
    "Handback",
    "HistoryPageRead",
    "ImportSession",
    "Imported",
    "Joined",
    "Limits",
    "Next",
    "RawPage",
    "Released",
    "Renew",
    "Renewal",
    "Replication",
    "SaveSummary",
    "Step",
    "StopRequested",
    "Stopped",
    "Sweep",
    "Wait",
    "Wake",
]
