"""A small hostile questions corpus in both formats, shared by the reader, ETL and Spark parity tests.

Each bad row is listed with the reason it must be quarantined for; the good rows
include the edges that must pass (int32's largest id and tag, EdNet's "-1" tag,
an empty part). Interactions on questions 1, 2 and 3 are valid in both formats.
"""

from __future__ import annotations

INT32_MAX = 2**31 - 1

RIIID_HEADER = "question_id,bundle_id,correct_answer,part,tags"
RIIID_GOOD = [
    "1,1,0,1,5 7",
    "2,2,1,2,6",
    "3,3,2,,-1",  # no part, EdNet's "no tag": untagged
    f"{INT32_MAX},4,3,127,{INT32_MAX}",  # the largest id and tag: kept, and no array of 2^31 entries
    "4,4,,3,8",  # Riiid's correct_answer is not used: it may be empty
]
RIIID_BAD = [
    ("-1,9,0,1,5", "bad_question_id"),  # would wrap around in numpy indexing
    (f"{INT32_MAX + 1},9,0,1,5", "bad_question_id"),
    ("99999999999999999999999,9,0,1,5", "bad_question_id"),
    ("x,9,0,1,5", "bad_question_id"),
    ("1.5,9,0,1,5", "bad_question_id"),
    (",9,0,1,5", "bad_question_id"),
    ("2,9,1,2,8", "duplicate_question_id"),  # the first row with id 2 keeps it
    ("10,9,4,1,5", "bad_correct_answer"),
    ("11,9,b,1,5", "bad_correct_answer"),
    ("12,9,0,-1,5", "bad_part"),
    ("13,9,0,128,5", "bad_part"),  # part is int8
    ("14,9,0,x,5", "bad_part"),
    ("15,9,0,1,-5", "bad_tags"),
    ("16,9,0,1,5 x", "bad_tags"),
    (f"17,9,0,1,5 {INT32_MAX + 1}", "bad_tags"),
    ("18,9,0,1,5;7", "bad_tags"),  # Riiid separates tags with spaces
    ("19,9,0,1", "wrong_column_count"),
    ("20,9,0,1,5,extra", "wrong_column_count"),
]

KT1_HEADER = "question_id,bundle_id,explanation_id,correct_answer,part,tags,deployed_at"
KT1_GOOD = [
    "q1,b1,e1,b,1,5;7,0",
    "q2,b2,e2,a,2,6,0",
    "q3,b3,e3,c,,-1,0",
    f"q{INT32_MAX},b4,e4,d,127,{INT32_MAX},0",
    "q4,b4,e4,d,3,8;-1,0",
]
KT1_BAD = [
    ("q-1,b9,e9,a,1,5,0", "bad_question_id"),
    (f"q{INT32_MAX + 1},b9,e9,a,1,5,0", "bad_question_id"),
    ("10,b9,e9,a,1,5,0", "bad_question_id"),  # KT1 ids are q<number>
    ("qx,b9,e9,a,1,5,0", "bad_question_id"),
    ("q2,b9,e9,a,2,8,0", "duplicate_question_id"),
    ("q10,b9,e9,e,1,5,0", "bad_correct_answer"),
    ("q11,b9,e9,,1,5,0", "bad_correct_answer"),  # KT1's correctness needs it
    ("q12,b9,e9,a,-3,5,0", "bad_part"),
    ("q13,b9,e9,a,1,5;x,0", "bad_tags"),
    ("q14,b9,e9,a,1,-2,0", "bad_tags"),
    ("q15,b9,e9,a,1", "wrong_column_count"),
]


def riiid_questions() -> str:
    """The Riiid corpus: good and bad rows interleaved, a blank line and a line of blanks (not rows)."""
    rows = [RIIID_GOOD[0], RIIID_GOOD[1], *(r for r, _ in RIIID_BAD[:9]), "", "   ", *RIIID_GOOD[2:],
            *(r for r, _ in RIIID_BAD[9:])]
    return "\n".join([RIIID_HEADER, *rows]) + "\n"


def kt1_questions() -> str:
    rows = [KT1_GOOD[0], KT1_GOOD[1], *(r for r, _ in KT1_BAD[:5]), "", *KT1_GOOD[2:], *(r for r, _ in KT1_BAD[5:])]
    return "\n".join([KT1_HEADER, *rows]) + "\n"
