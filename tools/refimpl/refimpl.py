#!/usr/bin/env python3
"""An independent, deliberately plain reading of spec/settlement.md (version 1) in Python.

It exists to cross-check settle-core: it shares no code and no structure with it, uses Python's
Decimal for exact arithmetic and zoneinfo for time zones, and is slow on purpose (clarity first).
`diffcheck.py` generates random scenarios and requires both to print the same JSON.

Usage: refimpl.py SCENARIO.json  -> prints the replay output JSON (exit 2 if malformed).
"""
import json
import sys
from datetime import datetime, timedelta, timezone, date, time as dtime
from decimal import Decimal, ROUND_HALF_EVEN, ROUND_FLOOR, getcontext
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
import re

getcontext().prec = 200

EXP = {}
for chunk in """AED2 AFN2 ALL2 AMD2 AOA2 ARS2 AUD2 AWG2 AZN2 BAM2 BBD2 BDT2 BHD3 BIF0 BMD2 BND2 BOB2 BOV2
BRL2 BSD2 BTN2 BWP2 BYN2 BZD2 CAD2 CDF2 CHE2 CHF2 CHW2 CLF4 CLP0 CNY2 COP2 COU2 CRC2 CUP2 CVE2 CZK2
DJF0 DKK2 DOP2 DZD2 EGP2 ERN2 ETB2 EUR2 FJD2 FKP2 GBP2 GEL2 GHS2 GIP2 GMD2 GNF0 GTQ2 GYD2 HKD2 HNL2
HTG2 HUF2 IDR2 ILS2 INR2 IQD3 IRR2 ISK0 JMD2 JOD3 JPY0 KES2 KGS2 KHR2 KMF0 KPW2 KRW0 KWD3 KYD2 KZT2
LAK2 LBP2 LKR2 LRD2 LSL2 LYD3 MAD2 MDL2 MGA2 MKD2 MMK2 MNT2 MOP2 MRU2 MUR2 MVR2 MWK2 MXN2 MXV2 MYR2
MZN2 NAD2 NGN2 NIO2 NOK2 NPR2 NZD2 OMR3 PAB2 PEN2 PGK2 PHP2 PKR2 PLN2 PYG0 QAR2 RON2 RSD2 RUB2 RWF0
SAR2 SBD2 SCR2 SDG2 SEK2 SGD2 SHP2 SLE2 SOS2 SRD2 SSP2 STN2 SVC2 SYP2 SZL2 THB2 TJS2 TMT2 TND3 TOP2
TRY2 TTD2 TWD2 TZS2 UAH2 UGX0 USD2 USN2 UYI0 UYU2 UYW4 UZS2 VED2 VES2 VND0 VUV0 WST2 XAD2 XAF0 XCD2 XCG2
XOF0 XPF0 YER2 ZAR2 ZMW2 ZWG2""".split():
    EXP[chunk[:3]] = int(chunk[3])

AMOUNT_RE = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
UNSIGNED_RE = re.compile(r"^[0-9]+(\.[0-9]+)?$")
UTC = timezone.utc


class Malformed(Exception):
    pass


def q(cur):
    return Decimal(1).scaleb(-EXP[cur])


def rnd(x, cur):
    return x.quantize(q(cur), rounding=ROUND_HALF_EVEN)


def fmt(x, cur):
    x = rnd(x, cur)
    if x == 0:
        x = abs(x)
    s = format(x, "f")
    return s


def inst(s, where):
    if not isinstance(s, str):
        raise Malformed(where)
    try:
        if not re.match(r"^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)$", s):
            raise ValueError
        frac = re.search(r"\.(\d+)", s)
        base = re.sub(r"\.\d+", "", s).replace("z", "Z").replace("t", "T").replace("Z", "+00:00")
        d = datetime.fromisoformat(base)
        ns = int((frac.group(1) + "000000000")[:9]) if frac else 0
        return (int(d.timestamp()), ns)
    except ValueError:
        raise Malformed(where)


def ts(t):
    return t[0] * 10**9 + t[1]


def show(ns):
    s, n = divmod(ns, 10**9)
    d = datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return d + "Z" if n == 0 else d + "." + str(n).rjust(9, "0").rstrip("0") + "Z"


def duration(s, where):
    m = re.match(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$", s or "")
    if not m or s in ("P", "PT") or s.endswith("T"):
        raise Malformed(where)
    w, d, h, mi, se = (int(x) if x else 0 for x in m.groups())
    return ((w * 7 + d) * 86400 + h * 3600 + mi * 60 + se) * 10**9


def dec_field(v, where):
    if isinstance(v, str) and UNSIGNED_RE.match(v):
        return Decimal(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return Decimal(str(v))
    raise Malformed(where)


def money_field(v, cur, where):
    d = dec_field(v, where)
    if d != rnd(d, cur):
        raise Malformed(where)
    return d


# ---------- cycles ----------

def local_to_utc_ns(tz, naive):
    """The spec's rule: gap -> instant the gap ends; fold -> earlier instant."""
    aware = naive.replace(tzinfo=tz, fold=0)
    utc = aware.astimezone(UTC)
    back = utc.astimezone(tz).replace(tzinfo=None)
    if back == naive:
        return int(utc.timestamp()) * 10**9
    # In a gap: search the first second whose local time is >= naive.
    lo = int(naive.replace(tzinfo=UTC).timestamp()) - 48 * 3600
    hi = int(naive.replace(tzinfo=UTC).timestamp()) + 48 * 3600

    def loc(sec):
        return datetime.fromtimestamp(sec, UTC).astimezone(tz).replace(tzinfo=None)

    while lo < hi:
        mid = (lo + hi) // 2
        if loc(mid) >= naive:
            hi = mid
        else:
            lo = mid + 1
    return lo * 10**9


class Cycle:
    def __init__(self, c, where):
        if not isinstance(c, dict):
            raise Malformed(where)
        self.every = c.get("every")
        if self.every not in ("daily", "weekly", "monthly"):
            raise Malformed(where + ".every")
        if self.every == "weekly":
            days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            if c.get("weekday") not in days:
                raise Malformed(where + ".weekday")
            self.weekday = days.index(c["weekday"])
        if self.every == "monthly":
            day = c.get("day")
            if isinstance(day, str) and day.isdigit():
                day = int(day)
            if not isinstance(day, int) or isinstance(day, bool) or not 1 <= day <= 28:
                raise Malformed(where + ".day")
            self.day = day
        co = c.get("cutoff")
        if not isinstance(co, str) or not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", co):
            raise Malformed(where + ".cutoff")
        self.cutoff = dtime(int(co[:2]), int(co[3:]))
        try:
            if not isinstance(c.get("tz"), str) or not c["tz"]:
                raise Malformed(where + ".tz")
            self.tz = ZoneInfo(c["tz"])
        except (ZoneInfoNotFoundError, ValueError):
            raise Malformed(where + ".tz")
        self.grace = duration(c["grace"], where + ".grace") if c.get("grace") is not None else 0
        self.cache = {}

    def boundary(self, n):
        if n in self.cache:
            return self.cache[n]
        if self.every == "daily":
            d = date(1970, 1, 1) + timedelta(days=n)
        elif self.every == "weekly":
            d = date(1970, 1, 5) + timedelta(days=7 * n + self.weekday)
        else:
            d = date(1970 + n // 12, n % 12 + 1, self.day)
        v = local_to_utc_ns(self.tz, datetime.combine(d, self.cutoff))
        self.cache[n] = v
        return v

    def period(self, t):
        """(start, end) containing instant t (ns)."""
        sec = t // 10**9
        ld = datetime.fromtimestamp(sec, UTC).astimezone(self.tz).date()
        if self.every == "daily":
            n = (ld - date(1970, 1, 1)).days
        elif self.every == "weekly":
            n = (ld - date(1970, 1, 5)).days // 7
        else:
            n = (ld.year - 1970) * 12 + ld.month - 1
        while self.boundary(n) > t:
            n -= 1
        while self.boundary(n + 1) <= t:
            n += 1
        return (self.boundary(n), self.boundary(n + 1))


# ---------- scenario ----------

def parse(doc):
    if not isinstance(doc, dict):
        raise Malformed("root")
    partners = {}
    for i, p in enumerate(doc.get("partners") or []):
        w = f"partners[{i}]"
        pid = p.get("id")
        if not isinstance(pid, str) or not pid or pid in partners:
            raise Malformed(w + ".id")
        cur = p.get("settlement_currency")
        if cur not in EXP:
            raise Malformed(w + ".settlement_currency")
        since = ts(inst(p.get("since"), w + ".since"))
        cyc = Cycle(p.get("cycle"), w + ".cycle")
        versions = []
        cs = p.get("contracts") or []
        if not cs:
            raise Malformed(w + ".contracts")
        for j, c in enumerate(cs):
            versions.append(parse_version(c, cur, f"{w}.contracts[{j}]", j))
        partners[pid] = dict(id=pid, cur=cur, since=since, cycle=cyc, versions=versions)
    rates = []
    for i, r in enumerate(doc.get("rates") or []):
        w = f"rates[{i}]"
        if r.get("base") not in EXP or r.get("quote") not in EXP:
            raise Malformed(w)
        rate = dec_field(r.get("rate"), w + ".rate")
        if rate == 0:
            raise Malformed(w + ".rate")
        rates.append(dict(base=r["base"], quote=r["quote"], rate=rate, at=ts(inst(r.get("at"), w + ".at")), idx=i))
    fx_max_age = duration(doc["fx_max_age"], "fx_max_age") if doc.get("fx_max_age") is not None else 24 * 3600 * 10**9
    txs = []
    for i, t in enumerate(doc.get("transactions") or []):
        w = f"transactions[{i}]"
        tid = t.get("id")
        if not isinstance(tid, str) or not 1 <= len(tid.encode()) <= 64:
            raise Malformed(w + ".id")
        if t.get("kind") not in ("sale", "refund", "chargeback", "payout", "adjustment"):
            raise Malformed(w + ".kind")
        occ = ts(inst(t.get("occurred_at"), w + ".occurred_at"))
        rec = ts(inst(t.get("received_at"), w + ".received_at"))
        txs.append(dict(raw=t, id=tid, kind=t["kind"], occ=occ, rec=rec, idx=i))
    close_until = ts(inst(doc.get("close_until"), "close_until"))
    return partners, rates, fx_max_age, txs, close_until


def parse_version(c, cur, w, order):
    eff = ts(inst(c.get("effective_from"), w + ".effective_from"))
    shares = []
    seen = set()
    for k, s in enumerate(c.get("shares") or []):
        party = s.get("party")
        if not isinstance(party, str) or not party or party in seen:
            raise Malformed(f"{w}.shares[{k}].party")
        seen.add(party)
        shares.append((party, dec_field(s.get("percent"), f"{w}.shares[{k}].percent")))
    if sum(p for _, p in shares) != 100:
        raise Malformed(w + ".shares")
    fees = []
    for k, f in enumerate(c.get("fees") or []):
        fw = f"{w}.fees[{k}]"
        if f.get("kind") == "percent":
            mn = money_field(f["min"], cur, fw + ".min") if f.get("min") is not None else None
            mx = money_field(f["max"], cur, fw + ".max") if f.get("max") is not None else None
            if mn is not None and mx is not None and mn > mx:
                raise Malformed(fw + ".min")
            fees.append(("percent", dec_field(f.get("bps"), fw + ".bps"), mn, mx))
        elif f.get("kind") == "fixed":
            fees.append(("fixed", money_field(f.get("amount"), cur, fw + ".amount")))
        else:
            raise Malformed(fw + ".kind")
    cb = money_field(c["chargeback_fee"], cur, w + ".chargeback_fee") if c.get("chargeback_fee") is not None else Decimal(0)
    tiered = []
    minimum = None
    for k, f in enumerate(c.get("period_fees") or []):
        fw = f"{w}.period_fees[{k}]"
        if f.get("kind") == "tiered":
            tiers = []
            for tt in f.get("tiers") or []:
                up = dec_field(tt["up_to"], fw) if tt.get("up_to") is not None else None
                tiers.append((up, dec_field(tt.get("bps"), fw)))
            tiered.append(tiers)
        elif f.get("kind") == "minimum":
            if minimum is not None:
                raise Malformed(fw)
            minimum = money_field(f.get("amount"), cur, fw + ".amount")
        else:
            raise Malformed(fw + ".kind")
    return dict(eff=eff, order=order, shares=shares, fees=fees, cb=cb, tiered=tiered, minimum=minimum)


def in_force(versions, t):
    # Latest effective_from <= t, later in list on ties; before the first, the earliest (later on tie).
    cands = [v for v in versions if v["eff"] <= t]
    if cands:
        best = max(v["eff"] for v in cands)
    else:
        best = min(v["eff"] for v in versions)
    return [v for v in versions if v["eff"] == best][-1]


def split(amount, cur, shares):
    units = int(amount.scaleb(EXP[cur]))
    exact = [Decimal(units) * p / 100 for _, p in shares]
    parts = [int(x.to_integral_value(rounding=ROUND_FLOOR)) for x in exact]
    left = units - sum(parts)
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return [Decimal(p).scaleb(-EXP[cur]) for p in parts]


def amount_ok(raw, cur, signed):
    if not isinstance(raw, str) or not AMOUNT_RE.match(raw):
        return None
    d = Decimal(raw)
    if d != rnd(d, cur) or d == 0 or (d < 0 and not signed):
        return None
    return d


def json_value(v):
    """A JSON value compared by value: numbers as numbers (7 == 7.0 == 7e0), true never 1."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return (type(v).__name__, v)
    if isinstance(v, (int, float)):
        return ("num", Decimal(repr(v)) if isinstance(v, float) else Decimal(v))
    if isinstance(v, list):
        return ("list", tuple(json_value(x) for x in v))
    return ("obj", tuple(sorted((k, json_value(x)) for k, x in v.items())))


def same_content(a, b):
    def norm(t):
        out = {}
        for k, v in t.items():
            if k == "received_at" or v is None:
                continue
            if k == "amount" and isinstance(v, str) and AMOUNT_RE.match(v):
                v = ("num", Decimal(v))
            elif k == "amount":
                v = ("raw", json.dumps(v))  # a malformed amount compares as its JSON text
            elif k == "occurred_at":
                v = ("t", ts(inst(v, k)))
            elif k == "metadata":
                v = json_value(v)
            out[k] = v
        return out
    return norm(a) == norm(b)


def run(doc):
    partners, rates, fx_max_age, txs, close_until = parse(doc)
    acct = {}
    for pid, p in partners.items():
        first = p["cycle"].period(p["since"])
        acct[pid] = dict(p=p, payable=Decimal(0), first=first, nxt=first, last_closing=Decimal(0),
                         stats={}, sales={})
    statements, exceptions, seen = [], [], {}

    def stats_for(a, start):
        return a["stats"].setdefault(start, dict(gross=Decimal(0), refunds=Decimal(0), cbs=Decimal(0), shares={},
                                                  order=[], fees=dict(percent=Decimal(0), fixed=Decimal(0),
                                                  chargeback=Decimal(0), tiered=Decimal(0), minimum=Decimal(0)),
                                                  adj=Decimal(0), pay=Decimal(0), n=0, late=0))

    def close(a, now):
        cyc = a["p"]["cycle"]
        cur = a["p"]["cur"]
        while a["nxt"][1] + cyc.grace <= now:
            start, end = a["nxt"]
            st = a["stats"].pop(start, None) or stats_for(a, start) and a["stats"].pop(start)
            v = in_force(a["p"]["versions"], start)
            basis = max(Decimal(0), st["gross"] - st["refunds"] - st["cbs"])
            tiered = Decimal(0)
            for tiers in v["tiered"]:
                acc, lower = Decimal(0), Decimal(0)
                for up, bps in tiers:
                    top = basis if up is None else min(basis, up)
                    if top > lower:
                        acc += (top - lower) * bps / 10000
                    if up is None or basis <= up:
                        break
                    lower = up
                tiered += rnd(acc, cur)
            f = st["fees"]["percent"] + st["fees"]["fixed"] + st["fees"]["chargeback"] + tiered
            minimum = max(Decimal(0), v["minimum"] - max(Decimal(0), f)) if v["minimum"] is not None else Decimal(0)
            st["fees"]["tiered"] += tiered
            st["fees"]["minimum"] += minimum
            a["payable"] -= tiered + minimum
            parties = [name for name, _ in v["shares"]]
            parties += [x for x in st["order"] if x not in parties]
            shares = {x: st["shares"].get(x, Decimal(0)) for x in parties}
            fees_total = sum(st["fees"].values())
            closing = a["last_closing"] + shares.get("partner", Decimal(0)) - fees_total + st["adj"] - st["pay"]
            statements.append(dict(partner=a["p"]["id"], start=start, end=end, cur=cur, opening=a["last_closing"],
                                   gross=st["gross"], refunds=st["refunds"], cbs=st["cbs"], shares=shares,
                                   fees=dict(st["fees"]), adj=st["adj"], pay=st["pay"], closing=closing,
                                   n=st["n"], late=st["late"]))
            a["last_closing"] = closing
            a["nxt"] = cyc.period(end)

    def find_rate(base, quote, t):
        cands = [r for r in rates if r["base"] == base and r["quote"] == quote and r["at"] <= t]
        if not cands:
            return None
        best = max(r["at"] for r in cands)
        return [r for r in cands if r["at"] == best][-1]

    for tx in sorted(txs, key=lambda t: (t["rec"], t["idx"])):
        raw = tx["raw"]
        if tx["id"] in seen:
            first_raw, first_outcome = seen[tx["id"]]
            if not same_content(first_raw, raw):
                exceptions.append((tx["id"], "duplicate_conflict"))
            continue

        def exc(reason):
            exceptions.append((tx["id"], reason))
            seen[tx["id"]] = (raw, reason)

        pid = raw.get("partner")
        if not isinstance(pid, str) or pid not in acct:
            exc("unknown_partner")
            continue
        a = acct[pid]
        p = a["p"]
        S = p["cur"]
        close(a, min(tx["rec"], close_until))
        cur = raw.get("currency")
        if not isinstance(cur, str) or cur not in EXP:
            exc("unknown_currency")
            continue
        kind = tx["kind"]
        amt = amount_ok(raw.get("amount"), cur, kind == "adjustment")
        if amt is None:
            exc("invalid_amount")
            continue
        if tx["occ"] > tx["rec"] + 300 * 10**9:
            exc("future_timestamp")
            continue
        reason = raw.get("reason")
        if kind == "adjustment" and (not isinstance(reason, str) or not reason.strip()):
            exc("invalid_adjustment")
            continue
        ver = in_force(p["versions"], tx["occ"])
        post = dict(gross=Decimal(0), refunds=Decimal(0), cbs=Decimal(0), shares={}, percent=Decimal(0),
                    fixed=Decimal(0), chargeback=Decimal(0), adj=Decimal(0), pay=Decimal(0))
        sale_rec = None
        if kind in ("refund", "chargeback"):
            orig = raw.get("original")
            sale = a["sales"].get(orig) if isinstance(orig, str) else None
            if sale is None:
                exc("unknown_original")
                continue
            if cur != sale["cur"]:
                exc("invalid_currency")
                continue
            c_prev = sale["reversed"]
            c = c_prev + amt
            if c > sale["a"]:
                exc("refund_exceeds_original")
                continue
            before = rnd(sale["a_s"] * c_prev / sale["a"], S)
            after = rnd(sale["a_s"] * c / sale["a"], S)
            pb = split(before, S, sale["shares"])
            pa = split(after, S, sale["shares"])
            for (name, _), x, y in zip(sale["shares"], pb, pa):
                post["shares"][name] = -(y - x)
            fee_back = rnd(sale["P"] * c / sale["a"], S) - rnd(sale["P"] * c_prev / sale["a"], S)
            post["percent"] = -fee_back
            if kind == "refund":
                post["refunds"] = after - before
            else:
                post["cbs"] = after - before
                post["chargeback"] = ver["cb"]
            sale_rec = ("reverse", sale, c)
        elif kind in ("payout", "adjustment"):
            if cur != S:
                exc("invalid_currency")
                continue
            if kind == "payout":
                if amt > a["payable"]:
                    exc("insufficient_balance")
                    continue
                post["pay"] = amt
            else:
                post["adj"] = amt
        else:  # sale
            if cur == S:
                a_s = amt
            else:
                r = find_rate(cur, S, tx["occ"])
                if r is not None:
                    a_s = rnd(amt * r["rate"], S)
                else:
                    r = find_rate(S, cur, tx["occ"])
                    if r is None:
                        exc("fx_unavailable")
                        continue
                    a_s = rnd(amt / r["rate"], S)
                if tx["occ"] - r["at"] > fx_max_age:
                    exc("fx_stale")
                    continue
            parts = split(a_s, S, ver["shares"])
            for (name, _), x in zip(ver["shares"], parts):
                post["shares"][name] = x
            P = Decimal(0)
            F = Decimal(0)
            for fee in ver["fees"]:
                if fee[0] == "percent":
                    x = rnd(a_s * fee[1] / 10000, S)
                    if fee[2] is not None:
                        x = max(x, fee[2])
                    if fee[3] is not None:
                        x = min(x, fee[3])
                    P += x
                else:
                    F += fee[1]
            post["gross"] = a_s
            post["percent"] = P
            post["fixed"] = F
            sale_rec = ("sale", dict(a=amt, cur=cur, a_s=a_s, shares=ver["shares"], P=P, reversed=Decimal(0)))
        # period
        cyc = p["cycle"]
        own = cyc.period(tx["occ"])
        late = tx["occ"] < a["first"][0] or own[1] + cyc.grace <= tx["rec"]
        if late:
            cands = [cyc.period(tx["rec"] - cyc.grace), a["nxt"], a["first"]]
            period = max(cands)
        else:
            period = own
        st = stats_for(a, period[0])
        st["gross"] += post["gross"]
        st["refunds"] += post["refunds"]
        st["cbs"] += post["cbs"]
        for name, x in post["shares"].items():
            st["shares"][name] = st["shares"].get(name, Decimal(0)) + x
            if x != 0 and name not in st["order"]:
                st["order"].append(name)
        st["fees"]["percent"] += post["percent"]
        st["fees"]["fixed"] += post["fixed"]
        st["fees"]["chargeback"] += post["chargeback"]
        st["adj"] += post["adj"]
        st["pay"] += post["pay"]
        st["n"] += 1
        st["late"] += 1 if late else 0
        a["payable"] += post["shares"].get("partner", Decimal(0)) - post["percent"] - post["fixed"] \
            - post["chargeback"] + post["adj"] - post["pay"]
        if sale_rec and sale_rec[0] == "sale":
            a["sales"][tx["id"]] = sale_rec[1]
        elif sale_rec:
            sale_rec[1]["reversed"] = sale_rec[2]
        seen[tx["id"]] = (raw, "applied")

    for pid in sorted(acct, key=lambda s: s.encode()):
        close(acct[pid], close_until)

    statements.sort(key=lambda s: (s["partner"].encode(), s["start"]))
    out = dict(statements=[], exceptions=[], balances=[])
    for s in statements:
        c = s["cur"]
        out["statements"].append({
            "partner": s["partner"], "period_start": show(s["start"]), "period_end": show(s["end"]), "currency": c,
            "opening": fmt(s["opening"], c), "gross_sales": fmt(s["gross"], c), "refunds": fmt(s["refunds"], c),
            "chargebacks": fmt(s["cbs"], c), "shares": {k: fmt(v, c) for k, v in s["shares"].items()},
            "fees": {k: fmt(s["fees"][k], c) for k in ("percent", "fixed", "chargeback", "tiered", "minimum")},
            "adjustments": fmt(s["adj"], c), "payouts": fmt(s["pay"], c), "closing": fmt(s["closing"], c),
            "transaction_count": s["n"], "late_count": s["late"]})
    out["exceptions"] = [{"id": i, "reason": r} for i, r in exceptions]
    for pid in sorted(acct, key=lambda s: s.encode()):
        out["balances"].append({"partner": pid, "payable": fmt(acct[pid]["payable"], acct[pid]["p"]["cur"])})
    return out


def main():
    try:
        doc = json.load(open(sys.argv[1]))
        out = run(doc)
    except (Malformed, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        print(f"malformed: {e}", file=sys.stderr)
        sys.exit(2)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
