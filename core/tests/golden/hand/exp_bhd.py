from mk import *
# Weekly, Saturday 18:00 Asia/Bahrain (UTC+3) = 15:00Z. 2026-07-01 is a Wednesday:
# P1 [06-27T15:00Z, 07-04T15:00Z), P2 [07-04T15:00Z, 07-11T15:00Z); both close before 07-12T00:00Z.
# BHD has three minor digits (fils).
# b1 12.345: 7715.625/4629.375 fils -> 7715/4629 + 1 to the partner -> 7.716/4.629; 1.75% = 0.2160375 -> 0.216; fixed 0.025
# b2 99.99 USD * 0.376 = 37.59624 -> 37.596; 23497.5/14098.5 -> tie, partner first -> 23.498/14.098;
#    1.75% = 0.65793 -> 0.658; fixed 0.025
# b3 1.000: 0.625/0.375; 1.75% = 0.0175 -> 0.018 -> min 0.100; fixed 0.025
# b4 refund 0.5 of b3: 0.500 -> 312.5/187.5 -> tie, partner first -> 0.313/0.187; fee back round(100*500/1000) = 0.050
# b5 "0.0005" BHD has more decimals than fils -> invalid_amount
# b6 refund 0.500: c 500->1000: 0.500; split(1000) - split(500) = 625/375 - 313/187 = 312/188; fee back 0.050
# b6b refund 0.001 more: cumulative 1.001 > 1.000 -> refund_exceeds_original
# b7 +0.001 "rounding"; b8 payout 10.000
# P1: gross 12.345+37.596+1.000 = 50.941, refunds 1.000; partner 7.716+23.498+0.625-0.313-0.312 = 31.214;
#     platform 4.629+14.098+0.375-0.187-0.188 = 18.727; percent 0.216+0.658+0.100-0.050-0.050 = 0.874; fixed 0.075
#     tiered on 49.941: 0.3% = 0.149823 -> 0.150; F = 1.099 >= 1.000 -> minimum 0
#     closing 31.214 - 1.099 + 0.001 - 10.000 = 20.116
# P2: b9 1500.000: 937.500/562.500; 1.75% = 26.25 -> max 5.000; fixed 0.025
#     tiered: 100*0.3% + 900*0.2% + 500*0.1% = 0.3 + 1.8 + 0.5 = 2.600; closing 20.116 + 937.5 - 7.625 = 949.991
S = [
  st("manama", "2026-06-27T15:00:00Z", "2026-07-04T15:00:00Z", "BHD", 3, "0", "50.941", "1.000", "0",
     [("partner", "31.214"), ("platform", "18.727")], {"percent": "0.874", "fixed": "0.075", "tiered": "0.150"},
     "0.001", "10", "20.116", 7, 0),
  st("manama", "2026-07-04T15:00:00Z", "2026-07-11T15:00:00Z", "BHD", 3, "20.116", "1500", "0", "0",
     [("partner", "937.5"), ("platform", "562.5")], {"percent": "5", "fixed": "0.025", "tiered": "2.6"},
     "0", "0", "949.991", 1, 0),
]
write("bhd_three_decimals_weekly", S, [("b5", "invalid_amount"), ("b6b", "refund_exceeds_original")],
      [("manama", "949.991")])
