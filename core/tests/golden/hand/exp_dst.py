from mk import *
# fold: daily 02:30 Europe/Berlin, grace 30 min. Cut-offs: 10-23 and 10-24 02:30 CEST = 00:30Z; 10-25 02:30 is
# ambiguous (clocks go back 03:00 CEST -> 02:00 CET): the earlier instant, 02:30 CEST = 00:30Z; 10-26 and
# 10-27 02:30 CET = 01:30Z. So P3 [10-25T00:30Z, 10-26T01:30Z) lasts 25 hours.
# Each sale: 95/5, fixed 0.10.
# P1 [10-23T00:30Z, 10-24T00:30Z) (contains since): d1 10 -> 9.50/0.50; closing 9.40
# P2 [10-24T00:30Z, 10-25T00:30Z), closes at 01:00Z: d2 received 00:45Z inside the grace -> on time: 19/1;
#    d5 (occurred in P2) received exactly at 01:00Z -> P2 closed -> late, to P3. closing 9.40 + 18.90 = 28.30
# P3: d3 (00:30Z = the fold's first 02:30), d4 (02:15 CET, second pass), d5 late, d6 (one second before the
#    end): 30+40+50+60 = 180 -> 171/9, fixed 0.40; closing 28.30 + 170.60 = 198.90
# P4 [10-26T01:30Z, 10-27T01:30Z) closes at 02:00Z = close_until: d7 70 -> 66.50/3.50; closing 265.30
# syd: weekly Sunday 02:30 Australia/Sydney. 2026-10-04 02:00 AEST jumps to 03:00 AEDT: the 02:30 cut-off is
# in the gap and moves to 03:00 AEDT = 10-03T16:00Z. Cut-offs: 09-27 02:30 AEST = 09-26T16:30Z, 10-03T16:00Z,
# then 02:30 AEDT = 15:30Z on 10-10, 10-17, 10-24 (10-31 is after close_until).
# P1: y1 100 (one second before the moved cut-off); P2: y2 50; P3 empty (still issued); P4: y3 10.
S = [
  st("fold", "2026-10-23T00:30:00Z", "2026-10-24T00:30:00Z", "EUR", 2, "0", "10", "0", "0",
     [("partner", "9.50"), ("platform", "0.50")], {"fixed": "0.10"}, "0", "0", "9.40", 1, 0),
  st("fold", "2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "EUR", 2, "9.40", "20", "0", "0",
     [("partner", "19"), ("platform", "1")], {"fixed": "0.10"}, "0", "0", "28.30", 1, 0),
  st("fold", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "EUR", 2, "28.30", "180", "0", "0",
     [("partner", "171"), ("platform", "9")], {"fixed": "0.40"}, "0", "0", "198.90", 4, 1),
  st("fold", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z", "EUR", 2, "198.90", "70", "0", "0",
     [("partner", "66.50"), ("platform", "3.50")], {"fixed": "0.10"}, "0", "0", "265.30", 1, 0),
  st("syd", "2026-09-26T16:30:00Z", "2026-10-03T16:00:00Z", "AUD", 2, "0", "100", "0", "0",
     [("partner", "100")], {}, "0", "0", "100", 1, 0),
  st("syd", "2026-10-03T16:00:00Z", "2026-10-10T15:30:00Z", "AUD", 2, "100", "50", "0", "0",
     [("partner", "50")], {}, "0", "0", "150", 1, 0),
  st("syd", "2026-10-10T15:30:00Z", "2026-10-17T15:30:00Z", "AUD", 2, "150", "0", "0", "0",
     [("partner", "0")], {}, "0", "0", "150", 0, 0),
  st("syd", "2026-10-17T15:30:00Z", "2026-10-24T15:30:00Z", "AUD", 2, "150", "10", "0", "0",
     [("partner", "10")], {}, "0", "0", "160", 1, 0),
]
write("dst_fold_berlin_gap_sydney", S, [], [("fold", "265.30"), ("syd", "160.00")])
