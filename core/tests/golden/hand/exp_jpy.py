from mk import *
# Daily 09:00 Asia/Tokyo (UTC+9, no DST) = 00:00Z. JPY has no minor digits.
# j1 12345 JPY: 8641.5/2469/1234.5 -> 8641/2469/1234, 1 leftover: partner and kei tie at .5, the
#    partner is listed first -> 8642/2469/1234; 2.5% = 308.625 -> 309; fixed 30
# j2 10.00 EUR, direct EUR->JPY 162.37: 1623.7 -> 1624; 1136.8/324.8/162.4 -> 1136/324/162 + 2 leftover to
#    the two .8 -> 1137/325/162; 2.5% = 40.6 -> 41 -> min 50; fixed 30
# j3 25.00 USD, inverse of JPY->USD 0.006543: 25/0.006543 = 3820.877... -> 3821; 2674.7/764.2/382.1 -> +1 to
#    the partner -> 2675/764/382; 2.5% = 95.525 -> 96; fixed 30
# j4 refund 5000 of j1: 5000 -> 3500/1000/500; fee back round(309*5000/12345) = round(125.15) = 125
# j5 chargeback 5.00 EUR of j2: round(1624*500/1000) = 812: 568.4/162.4/81.2 -> 568/162/81 + 1 to the partner
#    (tie with platform, partner first) -> 569/162/81; fee back round(50*500/1000) = 25; chargeback fee 1500
# j6 payout 5000 (payable then 8385 - 305 - 90 - 1500 = 6490); j7 "100.5" JPY -> invalid_amount;
# j8 "100.0" JPY = 100 -> ok; j9 -200
# j10 1.00 USD at 12:00:01Z: the JPY->USD rate is 12h00m01s old > PT12H -> fx_stale
# partner 8642+1137+2675-3500-569 = 8385; platform 2469+325+764-1000-162 = 2396; kei 1234+162+382-500-81 = 1197
# gross 12345+1624+3821 = 17790; percent 309+50+96-125-25 = 305; fixed 90; chargeback 1500
# closing 8385 - 1895 - 200 - 5100 = 1190
S = [
  st("nihon", "2026-06-01T00:00:00Z", "2026-06-02T00:00:00Z", "JPY", 0, "0", "17790", "5000", "812",
     [("partner", "8385"), ("platform", "2396"), ("agent:kei", "1197")],
     {"percent": "305", "fixed": "90", "chargeback": "1500"}, "-200", "5100", "1190", 8, 0),
]
write("jpy_zero_decimals_fx", S, [("j7", "invalid_amount"), ("j10", "fx_stale")], [("nihon", "1190")])
