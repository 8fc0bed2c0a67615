#!/usr/bin/env python3
"""Differential check: random scenarios through `settle replay` and through refimpl.py must give
the same JSON (values and key order). Seeded and reproducible.

Usage: diffcheck.py SETTLE_BINARY [--cases N] [--seed S] [--keep DIR]
Exit 1 on the first disagreement, with the scenario saved for a golden test.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
CURRENCIES = ["EUR", "USD", "JPY", "BHD", "GBP", "KRW", "CLF"]
EXP = {"EUR": 2, "USD": 2, "JPY": 0, "BHD": 3, "GBP": 2, "KRW": 0, "CLF": 4}
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "Asia/Seoul", "UTC", "Asia/Kolkata"]
BASE = datetime(2026, 3, 1, tzinfo=timezone.utc)


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def amount(rng, cur, signed=False, big=False):
    e = EXP.get(cur, 2)
    units = rng.randint(1, 10**(6 if big else 5))
    s = str(units).rjust(e + 1, "0")
    text = s if e == 0 else s[:-e] + "." + s[-e:]
    r = rng.random()
    if r < 0.03:
        text = text + "0"  # more digits by text, same value: valid
        if "." not in text:
            text = text[:-1] + ".0"
    elif r < 0.05:
        text = text + "1" if "." in text else text + ".1"  # too many decimals (or fine for e>0)
    elif r < 0.06:
        text = rng.choice(["1e3", ".5", "5.", " 5", "0", "-0", "+5", "abc"])
    if signed and rng.random() < 0.5 and not text.startswith("-"):
        text = "-" + text
    return text


def percents(rng, n):
    scale = rng.choice([0, 0, 1, 2, 4])
    total = 100 * 10**scale
    cuts = sorted(rng.randint(0, total) for _ in range(n - 1))
    parts = [b - a for a, b in zip([0] + cuts, cuts + [total])]
    def show(p):
        if scale == 0:
            return str(p)
        s = str(p).rjust(scale + 1, "0")
        return s[:-scale] + "." + s[-scale:]
    return [show(p) for p in parts]


def money(rng, cur, hi):
    e = EXP.get(cur, 2)
    units = rng.randint(0, hi * 10**e)
    s = str(units).rjust(e + 1, "0")
    return s if e == 0 else s[:-e] + "." + s[-e:]


def contract(rng, cur, start):
    n = rng.randint(1, 4)
    names = ["partner", "platform", "affiliate:bob", "affiliate:amy"]
    rng.shuffle(names)
    if rng.random() < 0.8 and "partner" not in names[:n]:
        names[0] = "partner"
    pcts = percents(rng, n)
    c = {"effective_from": iso(start),
         "shares": [{"party": names[i], "percent": pcts[i]} for i in range(n)]}
    fees = []
    for _ in range(rng.randint(0, 2)):
        if rng.random() < 0.6:
            f = {"kind": "percent", "bps": rng.choice(["150", "290", "12.5", "0", "1000"])}
            if rng.random() < 0.4:
                f["min"] = money(rng, cur, 1)
            if rng.random() < 0.4:
                f["max"] = str(max(float(f.get("min", "0")), 0) + 50) if EXP[cur] == 0 else money(rng, cur, 50)
                if "min" in f and float(f["max"]) < float(f["min"]):
                    del f["max"]
                if "max" in f and EXP[cur] == 0:
                    f["max"] = str(int(float(f["max"])))
            fees.append(f)
        else:
            fees.append({"kind": "fixed", "amount": money(rng, cur, 1)})
    if fees:
        c["fees"] = fees
    if rng.random() < 0.5:
        c["chargeback_fee"] = money(rng, cur, 20)
    pf = []
    if rng.random() < 0.5:
        tiers = []
        bound = 0
        for _ in range(rng.randint(0, 2)):
            bound += rng.randint(1, 2000)
            tiers.append({"up_to": str(bound), "bps": rng.choice(["50", "25", "10.5"])})
        tiers.append({"up_to": None, "bps": rng.choice(["5", "25"])})
        pf.append({"kind": "tiered", "tiers": tiers})
    if rng.random() < 0.4:
        pf.append({"kind": "minimum", "amount": money(rng, cur, 100)})
    if pf:
        c["period_fees"] = pf
    return c


def scenario(rng):
    partners = []
    for i in range(rng.randint(1, 3)):
        cur = rng.choice(CURRENCIES)
        every = rng.choice(["daily", "weekly", "monthly"])
        cyc = {"every": every, "cutoff": rng.choice(["00:00", "02:30", "09:00", "23:45", "03:00"]),
               "tz": rng.choice(ZONES)}
        if every == "weekly":
            cyc["weekday"] = rng.choice(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])
        if every == "monthly":
            cyc["day"] = rng.randint(1, 28)
        g = rng.choice([None, "PT0S", "PT2H", "P1D"])
        if g:
            cyc["grace"] = g
        since = BASE + timedelta(hours=rng.randint(0, 24 * 10))
        versions = [contract(rng, cur, since - timedelta(days=rng.randint(0, 5)))]
        for _ in range(rng.randint(0, 2)):
            versions.append(contract(rng, cur, since + timedelta(hours=rng.randint(-48, 24 * 40))))
        partners.append({"id": f"p{i}", "settlement_currency": cur, "since": iso(since), "cycle": cyc,
                         "contracts": versions})
    rates = []
    for _ in range(rng.randint(0, 6)):
        a, b = rng.sample(CURRENCIES, 2)
        rates.append({"base": a, "quote": b, "rate": rng.choice(["0.92", "1.0865", "0.006211", "157.3", "0.5", "1300"]),
                      "at": iso(BASE + timedelta(hours=rng.randint(0, 24 * 40)))})
    txs = []
    sales = []
    for k in range(rng.randint(0, 50)):
        p = rng.choice(partners)
        cur = p["settlement_currency"] if rng.random() < 0.6 else rng.choice(CURRENCIES)
        kind = rng.choices(["sale", "refund", "chargeback", "payout", "adjustment"], [6, 2, 1, 1, 1])[0]
        occ = BASE + timedelta(minutes=rng.randint(-60 * 24 * 3, 60 * 24 * 45))
        delay = rng.choice([1, 1, 60, 3600, 86400 * 3, -299, -301, 86400 * 20])
        rec = occ + timedelta(seconds=delay)
        t = {"id": f"t{k}", "partner": p["id"], "kind": kind, "amount": amount(rng, cur, kind == "adjustment"),
             "currency": cur, "occurred_at": iso(occ), "received_at": iso(rec)}
        if kind in ("refund", "chargeback"):
            if sales and rng.random() < 0.85:
                s = rng.choice(sales)
                t["original"] = s["id"]
                t["currency"] = s.get("currency", cur) if rng.random() < 0.9 else t["currency"]
                t["partner"] = s.get("partner", p["id"]) if rng.random() < 0.95 else t["partner"]
                if rng.random() < 0.7 and "amount" in s:
                    whole = s["amount"]
                    t["amount"] = whole if rng.random() < 0.3 else amount(rng, t["currency"])
            else:
                t["original"] = rng.choice(["nope", "t0"])
        if kind == "adjustment" and rng.random() < 0.85:
            t["reason"] = rng.choice(["goodwill", "correction", " "])
        r = rng.random()
        if r < 0.03:
            del t["partner"]
        elif r < 0.05:
            t["partner"] = "ghost"
        elif r < 0.07:
            del t["currency"]
        elif r < 0.08:
            t["currency"] = rng.choice(["usd", "XAU", "BGN"])
        elif r < 0.1:
            del t["amount"]
        if rng.random() < 0.05:
            t["metadata"] = {"b": 1, "a": [1, 2]}
        if kind == "sale":
            sales.append(t)
        txs.append(t)
        if txs and rng.random() < 0.08:
            d = dict(rng.choice(txs))
            d["received_at"] = iso(rec + timedelta(seconds=5))
            if rng.random() < 0.5 and "amount" in d:
                d["amount"] = amount(rng, d.get("currency", "EUR") if d.get("currency") in EXP else "EUR")
            txs.append(d)
    end = BASE + timedelta(days=rng.randint(5, 50))
    return {"partners": partners, "rates": rates, "fx_max_age": rng.choice(["PT24H", "P2D", "PT1H"]),
            "transactions": txs, "close_until": iso(end)}


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("settle")
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="settle-diff-")
    agreed = 0
    for case in range(args.cases):
        sc = scenario(rng)
        path = os.path.join(tmp, f"case{case}.json")
        with open(path, "w") as f:
            json.dump(sc, f, indent=1)
        rc1, out1, err1 = run([args.settle, "replay", path])
        rc2, out2, err2 = run([sys.executable, os.path.join(HERE, "refimpl.py"), path])
        same = rc1 == rc2 and (rc1 != 0 or json.dumps(json.loads(out1)) == json.dumps(json.loads(out2)))
        if not same:
            keep = args.keep or tmp
            os.makedirs(keep, exist_ok=True)
            dest = os.path.join(keep, f"disagreement_seed{args.seed}_case{case}.json")
            with open(dest, "w") as f:
                json.dump(sc, f, indent=1)
            print(f"case {case}: settle rc={rc1} refimpl rc={rc2}; scenario saved to {dest}")
            if rc1 == 0 and rc2 == 0:
                a, b = json.loads(out1), json.loads(out2)
                for key in a:
                    if a[key] != b[key] or json.dumps(a[key]) != json.dumps(b[key]):
                        print(f"  {key} differ")
                        if isinstance(a[key], list):
                            for x, y in zip(a[key], b[key]):
                                if json.dumps(x) != json.dumps(y):
                                    print("  settle :", json.dumps(x))
                                    print("  refimpl:", json.dumps(y))
                                    break
                            if len(a[key]) != len(b[key]):
                                print(f"  lengths {len(a[key])} vs {len(b[key])}")
            else:
                print("  settle:", err1.strip()[:300])
                print("  refimpl:", err2.strip()[:300])
            sys.exit(1)
        agreed += 1
    print(f"{agreed} passed, 0 failed")


if __name__ == "__main__":
    main()
