from mk import *
# Monthly on the 1st, 00:00 Europe/London. Feb [02-01T00:00Z, 03-01T00:00Z) (GMT); March ends at
# 04-01 00:00 BST = 03-31T23:00Z (DST began 03-29), so March is 743 hours long.
# Versions (listed newest first; lookup is by effective_from): v1 from 01-01 (85/15, 1%, cb 5.00,
# minimum 20.00), v2 from 02-20 (80/10/10 zed, 1.5% max 3.00 + fixed 0.20, cb 8.00, tiered 0 up to 500, 1% above).
# Feb (period fees with v1, in force at the period's start):
#   m1 300.00 (v1): 255/45, fee 3.00
#   m2 400.00 (v2): 320/40/40, 1.5% = 6.00 -> max 3.00, fixed 0.20
#   m3 chargeback 100 of m1: reversed with m1's v1 shares: 85/15; fee back round(3.00*100/300) = 1.00;
#      chargeback fee from v2 (in force at 02-25): 8.00
#   m4 33.33 (v2): 2666.4/333.3/333.3 cents -> 2666/333/333 + 1 leftover to the partner (.4) -> 26.67/3.33/3.33;
#      1.5% = 0.49995 -> 0.50; fixed 0.20
#   shares: v1's parties first (partner, platform), then affiliate:zed
#   partner 255+320-85+26.67 = 516.67; platform 45+40-15+3.33 = 73.33; zed 43.33
#   F = 5.50 + 0.40 + 8.00 = 13.90 -> minimum 6.10; closing 516.67 - 20.00 = 496.67
# March (period fees with v2): m7 refund 10 of m1 (v1): c 100->110: 10.00; split(110)=93.50/16.50 minus 85/15
#   -> 8.50/1.50; fee back round(3*110/300)=1.10 - 1.00 = 0.10
#   m5 1000.00 (v2): 800/100/100; 1.5% = 15 -> 3.00; fixed 0.20
#   tiered on 990.00: 500*0 + 490*1% = 4.90; closing 496.67 + 791.50 - (2.90+0.20+4.90) = 1280.17
# m6 (04-01 00:30 BST, April) and m8 (received after close_until) are applied, April does not close:
#   m6 10.00: 8.00 - 0.15 - 0.20 = +7.65; m8 20.00: 16.00 - 0.30 - 0.20 = +15.50; payable 1303.32
S = [
  st("vchg", "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", "GBP", 2, "0", "733.33", "0", "100",
     [("partner", "516.67"), ("platform", "73.33"), ("affiliate:zed", "43.33")],
     {"percent": "5.50", "fixed": "0.40", "chargeback": "8", "minimum": "6.10"}, "0", "0", "496.67", 4, 0),
  st("vchg", "2026-03-01T00:00:00Z", "2026-03-31T23:00:00Z", "GBP", 2, "496.67", "1000", "10", "0",
     [("partner", "791.50"), ("platform", "98.50"), ("affiliate:zed", "100")],
     {"percent": "2.90", "fixed": "0.20", "tiered": "4.90"}, "0", "0", "1280.17", 2, 0),
]
write("monthly_version_change_dst", S, [], [("vchg", "1303.32")])
