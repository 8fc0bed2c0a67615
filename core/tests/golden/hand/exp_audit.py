from mk import *
# audit_versions_period_fees_checks: written by the spec audit from the spec's text alone.
# Partner aud, EUR, daily UTC cut-off 00:00, grace 0, since 02-02. Periods P1 [02-02,02-03), P2 [02-03,02-04),
# P3 [02-04,02-05), P4 [02-05,02-06); P4 closes at 02-06T00:00Z = close_until (included).
# Versions: V1 and V2 both effective 02-03T00:00Z (V2 later in the list wins, also before the first effective_from:
# so V2 is in force from the start); V3 from 02-04T12:00Z.
#   V2: 70/30, percent 1%, chargeback fee 4.00, tiered A [<=50: 2%, rest 1%], tiered B [10 bps], minimum 2.00.
#   V3: 50/40/10 (affiliate:x), percent 1% max 0.20, chargeback fee 6.00, no period fees.
# P1 (version at start 02-02 -> V2):
#   s1 100.00 -> 70.00/30.00, percent 1.00. payable 69.00
#   c1 chargeback 35.00 of s1: round(100*35/100) = 35.00 -> split(35.00) = 24.50/10.50 given back;
#      fee back round(1.00*35/100) = 0.35; chargeback fee (V2 at 02-02T11, before the first effective_from) 4.00.
#      payable 69.00 - 24.50 + 0.35 - 4.00 = 40.85
#   po1 41.50 > 40.85: insufficient_balance; po2 40.85 = payable: fine -> payable 0
#   close: net volume 100 - 35 = 65.00; tiered A = 50*2% + 15*1% = 1.00 + 0.15 = 1.15;
#      tiered B = round(65*0.1%) = round(0.065) = 0.06 (half even). Each schedule rounded on its own: 1.21
#      (rounding the sum 1.215 would give 1.22). F = 0.65 + 4.00 + 1.21 = 5.86 >= 2.00 -> minimum 0.
#      closing = 0 + 45.50 - (0.65 + 4.00 + 1.21) - 40.85 = -1.21
# P2: empty (version at start V2): tiered 0, minimum 2.00 - max(0, 0) = 2.00; closing -3.21
# P3 (version at start 02-04T00 -> V2: its parties first, period fees from V2):
#   x0 XAD at 02-04T10: no XAD rate yet -> fx_unavailable
#   s5 7.77 at 11:00 (V2): 777*70% = 543.9, 777*30% = 233.1 -> leftover unit to partner: 5.44/2.33; fee 0.0777 -> 0.08
#   s3 10.00 at 13:00 (V3): 5.00/4.00/1.00; fee 0.10
#   s4 50.00 at 14:00 (V3): 25.00/20.00/5.00; fee 0.50 -> max 0.20
#   r5 refund "7.770" of s5 (full, sale's V2 shares): 5.44/2.33 back, fee back 0.08
#   r6 0.01 more of s5: refund_exceeds_original
#   a1 adjustment -1.50; a2 "-0.00" is zero: invalid_amount
#   cb2 chargeback 10.00 of s3 (full, V3 shares): 5.00/4.00/1.00 back, fee back 0.10, chargeback fee (V3) 6.00
#   payable at po3: -3.21 + (4.90 + 24.80 + 5.36 - 5.36 - 1.50 - 10.90 = 17.30) = 14.09 -> po3 14.09 fine
#   close: gross 10 + 50 + 7.77 = 67.77, refunds 7.77, chargebacks 10.00, net 50.00 (exactly at tier A's bound):
#      tiered A 50*2% = 1.00, tiered B 0.05 -> 1.05; F = percent (0.10+0.20+0.08-0.08-0.10 = 0.20) + 6.00 + 1.05
#      = 7.25 -> minimum 0. shares partner 5+25+5.44-5.44-5 = 25.00, platform 20.00, affiliate:x 5.00
#      closing = -3.21 + 25.00 - 7.25 - 1.50 - 14.09 = -1.05
# P4 (version at start V3: its three parties, no period fees):
#   s6 occurred 02-04T20:00 (P3), received 02-05T01:00 after P3 closed -> late into P4; V3 by occurred_at:
#      10.00/8.00/2.00, fee 0.20
#   s8 "1.000...0" XAD (37 zeros: 1 by value) at 01:30: latest rate 2.5 (02-05T00:00) -> 2.50: 1.25/1.00/0.25,
#      fee 0.025 -> 0.02 (half even)
#   s7 4.00 XAD at 03:00: two rates at 02:00 (2.4 then 2.6 in the list; the 00:00 one listed between them):
#      the later in the list, 2.6 -> 10.40: 5.20/4.16/1.04, fee 0.104 -> 0.10
#   gross 32.90; partner 16.45, platform 13.16, affiliate:x 3.29; percent 0.32; closing -1.05 + 16.45 - 0.32 = 15.08
# After close_until (applied, no statement): e13 1.00 XAD at 02-06T02:00:00, rate 2.6 exactly 24 h old -> 2.60:
#   partner 1.30 - fee 0.03 (0.026) = +1.27 -> payable 16.35; e12 one second later: fx_stale.
# Partner "5": one empty period [02-05, 02-06), all zero.
# Exceptions, in order of received_at: po1, e1 payout in USD (invalid_currency before insufficient_balance),
#   e2 USD adjustment with blank reason (invalid_adjustment first), e3 refund 6m01s in the future of an unknown
#   sale (future_timestamp first), e4 USD refund of s1 for 1000 (invalid_currency before refund_exceeds),
#   e5 "xad" with 1.005 (unknown_currency first), e6 1.005 EUR in the future (invalid_amount first),
#   s1 again from "ghost" with other content (duplicate_conflict first), e8 "partner": 5 is not partner "5"
#   (unknown_partner), e9 numeric reason (invalid_adjustment); s1 again at 13:09 with the same content by value
#   ("100.0", the same instant with an offset, metadata keys reordered and 1.0 for 1) is a repeat, not listed;
#   x0, r6, a2, e12.
S = [
  st("5", "2026-02-05T00:00:00Z", "2026-02-06T00:00:00Z", "EUR", 2, "0", "0", "0", "0",
     [("partner", "0")], {}, "0", "0", "0", 0, 0),
  st("aud", "2026-02-02T00:00:00Z", "2026-02-03T00:00:00Z", "EUR", 2, "0", "100", "0", "35",
     [("partner", "45.50"), ("platform", "19.50")], {"percent": "0.65", "chargeback": "4", "tiered": "1.21"},
     "0", "40.85", "-1.21", 3, 0),
  st("aud", "2026-02-03T00:00:00Z", "2026-02-04T00:00:00Z", "EUR", 2, "-1.21", "0", "0", "0",
     [("partner", "0"), ("platform", "0")], {"minimum": "2"}, "0", "0", "-3.21", 0, 0),
  st("aud", "2026-02-04T00:00:00Z", "2026-02-05T00:00:00Z", "EUR", 2, "-3.21", "67.77", "7.77", "10",
     [("partner", "25"), ("platform", "20"), ("affiliate:x", "5")], {"percent": "0.20", "chargeback": "6", "tiered": "1.05"},
     "-1.50", "14.09", "-1.05", 7, 0),
  st("aud", "2026-02-05T00:00:00Z", "2026-02-06T00:00:00Z", "EUR", 2, "-1.05", "32.90", "0", "0",
     [("partner", "16.45"), ("platform", "13.16"), ("affiliate:x", "3.29")], {"percent": "0.32"},
     "0", "0", "15.08", 3, 1),
]
E = [("po1", "insufficient_balance"), ("e1", "invalid_currency"), ("e2", "invalid_adjustment"),
     ("e3", "future_timestamp"), ("e4", "invalid_currency"), ("e5", "unknown_currency"), ("e6", "invalid_amount"),
     ("s1", "duplicate_conflict"), ("e8", "unknown_partner"), ("e9", "invalid_adjustment"),
     ("x0", "fx_unavailable"), ("r6", "refund_exceeds_original"), ("a2", "invalid_amount"), ("e12", "fx_stale")]
write("audit_versions_period_fees_checks", S, E, [("5", "0.00"), ("aud", "16.35")])
