"""Writes hand-computed expected outputs (run: cd core/tests/golden/hand && python3 exp_NAME.py). Every number is entered by hand (see the comments in
each scenario's section); the helper only formats them and checks the spec's identities."""
import json
import os
from decimal import Decimal as D

def amt(x, e):
    q = D(1).scaleb(-e) if e else D(1)
    v = D(x).quantize(q)
    if v == 0: v = abs(v)
    return format(v, 'f')

def st(partner, start, end, cur, e, opening, gross, refunds, cbs, shares, fees, adj, payouts, closing, n, late):
    fees_full = {k: fees.get(k, "0") for k in ["percent", "fixed", "chargeback", "tiered", "minimum"]}
    # identities, checked on the hand numbers
    assert D(gross) - D(refunds) - D(cbs) == sum(D(v) for _, v in shares), (partner, start, "volume")
    partner_share = dict(shares).get("partner", "0")
    calc = D(opening) + D(partner_share) - sum(D(v) for v in fees_full.values()) + D(adj) - D(payouts)
    assert calc == D(closing), (partner, start, "closing", calc, closing)
    return {"partner": partner, "period_start": start, "period_end": end, "currency": cur,
            "opening": amt(opening, e), "gross_sales": amt(gross, e), "refunds": amt(refunds, e),
            "chargebacks": amt(cbs, e), "shares": {k: amt(v, e) for k, v in shares},
            "fees": {k: amt(v, e) for k, v in fees_full.items()},
            "adjustments": amt(adj, e), "payouts": amt(payouts, e), "closing": amt(closing, e),
            "transaction_count": n, "late_count": late}

def chain(statements):
    for a, b in zip(statements, statements[1:]):
        if a["partner"] == b["partner"]:
            assert a["closing"] == b["opening"], (a["period_start"], "opening chain")
            assert a["period_end"] == b["period_start"], "periods tile"

def write(name, statements, exceptions, balances):
    chain(statements)
    out = {"statements": statements, "exceptions": [{"id": i, "reason": r} for i, r in exceptions],
           "balances": [{"partner": p, "payable": v} for p, v in balances]}
    # Writes next to the scenarios: core/tests/golden/NAME.expected.json.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", f"{name}.expected.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
