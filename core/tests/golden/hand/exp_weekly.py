from mk import *
# Weekly, Monday 00:00 Berlin (CET, UTC+1), grace 1 day. First period contains since (Wed 01-07):
# P1 [01-04T23:00Z, 01-11T23:00Z) closes at 01-12T23:00Z; P2 [01-11T23:00Z, 01-18T23:00Z); P3 to 01-25T23:00Z
# (closes 01-26T23:00Z <= close_until 01-27T00:00Z); P4 does not close.
# P1: w1 1200.00 -> 960/240, 2% = 24.00, fixed 0.30
#     w-pre 10.00 occurred before P1 (late, to P1 = oldest open) -> 8/2, 2% = 0.20 -> min 0.50, fixed 0.30
#     w2 25.00 received 01-12T22:59:59Z, inside the grace -> on time in P1 -> 20/5, fee 0.50, fixed 0.30
#     tiered on 1235.00: 1000 * 1% + 235 * 0.5% = 11.175 -> half even 11.18
#     F = 25.00 + 0.90 + 11.18 = 37.08 >= 25 -> minimum 0; closing 988 - 37.08 = 950.92
# P2: w3 occurred in P1 but received exactly at P1's close (01-12T23:00Z) -> late, to P2 -> 32/8, 0.80, 0.30
#     cb1 200 of w1: round(1200*200/1200)=200 -> 160/40; fee back round(24*200/1200)=4.00; chargeback fee 10.00
#     rf1 100 of w1: c 200->300: 100 -> split(300)-split(200) = 240/60-160/40 = 80/20; fee back 6.00-4.00 = 2.00
#     po1 500 (payable then 950.92+30.90-166.00-78.00 = 737.82)
#     net volume 40-100-200 < 0 -> 0 -> tiered 0; F = -5.20+0.30+10.00 = 5.10 -> minimum 25-5.10 = 19.90
#     closing 950.92 - 208 - 25.00 - 500 = 217.92
# P3: w4 5.00 -> 4/1, 2% = 0.10 -> min 0.50, fixed 0.30; tiered 5.00*1% = 0.05; F = 0.85 -> minimum 24.15
#     adj1 +10.00; closing 217.92 + 4 - 25.00 + 10 = 206.92
S = [
  st("wk", "2026-01-04T23:00:00Z", "2026-01-11T23:00:00Z", "EUR", 2, "0", "1235", "0", "0",
     [("partner", "988"), ("platform", "247")], {"percent": "25", "fixed": "0.90", "tiered": "11.18"},
     "0", "0", "950.92", 3, 1),
  st("wk", "2026-01-11T23:00:00Z", "2026-01-18T23:00:00Z", "EUR", 2, "950.92", "40", "100", "200",
     [("partner", "-208"), ("platform", "-52")],
     {"percent": "-5.20", "fixed": "0.30", "chargeback": "10", "minimum": "19.90"}, "0", "500", "217.92", 4, 1),
  st("wk", "2026-01-18T23:00:00Z", "2026-01-25T23:00:00Z", "EUR", 2, "217.92", "5", "0", "0",
     [("partner", "4"), ("platform", "1")], {"percent": "0.50", "fixed": "0.30", "tiered": "0.05", "minimum": "24.15"},
     "10", "0", "206.92", 2, 0),
]
write("weekly_late_grace_tiered_minimum", S, [], [("wk", "206.92")])
