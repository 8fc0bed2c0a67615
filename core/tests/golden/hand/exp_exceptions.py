from mk import *
# acme: s1 100.00 -> partner 90.00 platform 10.00, 1% fee 1.00
#       f2 20.00 (occurred exactly received + 5 min) -> 18.00 / 2.00, fee 0.20
#       r2 refund 40.00 of s1: round(100.00*40/100)=40.00, split 36.00/4.00, fee back round(1.00*40/100)=0.40
#       j4 -3.00, j5 +2.50; payable before p1 = 89.00 + 17.80 - 35.60 - 0.50 = 70.70 = p1
S = [
  st("acme", "2026-02-02T00:00:00Z", "2026-02-03T00:00:00Z", "EUR", 2, "0", "120", "40", "0",
     [("partner", "72"), ("platform", "8")], {"percent": "0.80"}, "-0.50", "70.70", "0", 6, 0),
  st("other", "2026-02-02T00:00:00Z", "2026-02-03T00:00:00Z", "EUR", 2, "0", "50", "0", "0",
     [("partner", "50")], {}, "0", "0", "50", 1, 0),
]
E = [("s1", "duplicate_conflict"), ("s1", "duplicate_conflict"), ("g1", "unknown_partner"), ("g2", "unknown_partner"),
     ("c1", "unknown_currency"), ("c2", "unknown_currency"), ("c3", "unknown_currency"),
     ("a1", "invalid_amount"), ("a2", "invalid_amount"), ("a3", "invalid_amount"), ("a4", "invalid_amount"),
     ("a5", "invalid_amount"), ("a6", "invalid_amount"), ("f1", "future_timestamp"), ("j1", "invalid_adjustment"),
     ("j2", "future_timestamp"), ("j3", "invalid_adjustment"), ("u1", "unknown_original"), ("u2", "unknown_original"),
     ("x1", "fx_unavailable"), ("u3", "unknown_original"), ("u4", "unknown_original"), ("u5", "unknown_original"),
     ("i1", "invalid_currency"), ("i2", "invalid_currency"), ("i3", "invalid_currency"), ("i4", "invalid_currency"),
     ("r1", "refund_exceeds_original"), ("r3", "refund_exceeds_original"), ("x2", "fx_stale"),
     ("x3", "fx_unavailable"), ("p2", "insufficient_balance"), ("p3", "insufficient_balance")]
write("exceptions_every_reason", S, E, [("acme", "0.00"), ("other", "50.00")])
