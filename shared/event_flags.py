"""Attributes that say how an event's data came, set where events are mapped (the portal's payloads) and
read by the rules and the drill-downs: one spelling for both sides."""

# A status only claimed, not reported: a snapshot's end (the national portal's whole-dossier snapshots are
# known to send 5, 6 and 8 as 9), a step record's receipt, a step record's 9 (systems make up 9 steps for
# 5, 6 and 8 too). The rules let a reported status at the same instant win over it.
PROVISIONAL = "status_provisional"

# What a record lacked, so the drill-down can say why a dossier counts as it does (``?flag=input_gaps``).
END_TIME_MISSING = "end_time_missing"  # the snapshot claims an end (7-10) with no time for it
PROCEDURE_MISSING = "procedure_missing"  # no MaTTHC: counted under an unknown procedure
# An optional time dropped because it could not be read or lies outside the window of times.
DUE_TIME_UNREADABLE = "due_time_unreadable"
END_TIME_UNREADABLE = "end_time_unreadable"
SUPPLEMENT_TIME_UNREADABLE = "supplement_time_unreadable"
STEP_TIME_UNREADABLE = "step_time_unreadable"
UNREADABLE_FLAGS = (DUE_TIME_UNREADABLE, END_TIME_UNREADABLE, SUPPLEMENT_TIME_UNREADABLE, STEP_TIME_UNREADABLE)
# What a whole-dossier snapshot says about its own record: each snapshot states all of them, false where the
# record was complete, so a corrected snapshot clears what an earlier one flagged.
SNAPSHOT_FLAGS = (END_TIME_MISSING, PROCEDURE_MISSING, DUE_TIME_UNREADABLE, END_TIME_UNREADABLE,
                  SUPPLEMENT_TIME_UNREADABLE)
INPUT_FLAGS = (END_TIME_MISSING, PROCEDURE_MISSING, *UNREADABLE_FLAGS)
