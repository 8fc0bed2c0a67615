#!/usr/bin/env python3
"""Checks a rendered Settle chart (the output of `helm template`) for the properties that keep a
cluster safe: the StatefulSet's identities and volumes, probes, lifecycle hooks, scheduling
spread, and a PodDisruptionBudget consistent with the shards' replication factor.

usage: check_rendered.py RENDERED.yaml --nodes N --shard-replicas R
                         [--servicemonitor] [--tls-secret NAME] [--auth-secret NAME] [--self-test]
Exits 1 with one line per failed property.
"""
import argparse
import copy
import sys

import yaml


class Checker:
    def __init__(self):
        self.failures = []

    def check(self, cond, what):
        if not cond:
            self.failures.append(what)
        return cond


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, c, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    c.check(len(found) == 1, f"expected exactly one {kind}{' ' + name if name else ''}, found {len(found)}")
    return found[0] if found else None


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_statefulset(docs, args, c):
    sts = one(docs, "StatefulSet", c)
    if sts is None:
        return None, None
    spec = sts["spec"]
    pod = spec["template"]
    labels = pod["metadata"]["labels"]
    c.check(spec["replicas"] == args.nodes, f"StatefulSet replicas {spec['replicas']} != {args.nodes}")
    c.check(matches(spec["selector"]["matchLabels"], labels), "StatefulSet selector does not match its pods")
    c.check(spec.get("podManagementPolicy") == "Parallel", "initial members must start together (Parallel)")
    c.check(spec["updateStrategy"]["type"] == "RollingUpdate", "updates must be rolling")

    headless = one(docs, "Service", c, spec["serviceName"])
    if headless:
        hs = headless["spec"]
        c.check(hs.get("clusterIP") == "None", "the StatefulSet's service must be headless")
        c.check(hs.get("publishNotReadyAddresses") is True, "peers must resolve before they are ready")
        c.check(matches(hs["selector"], labels), "headless Service does not select the pods")

    claims = {t["metadata"]["name"]: t for t in spec.get("volumeClaimTemplates", [])}
    c.check("data" in claims, "one PersistentVolumeClaim per pod (volumeClaimTemplates 'data')")
    if "data" in claims:
        c.check(claims["data"]["spec"]["accessModes"] == ["ReadWriteOnce"], "data volumes are ReadWriteOnce")

    ps = pod["spec"]
    containers = ps["containers"]
    c.check(len(containers) == 1, "one container per pod")
    ct = containers[0]
    mounts = {m["name"]: m["mountPath"] for m in ct.get("volumeMounts", [])}
    c.check(mounts.get("data") == "/var/lib/settle", "the data volume is mounted at /var/lib/settle")
    ports = {p["name"]: p for p in ct["ports"]}
    for name, proto in (("quic", "UDP"), ("peer", "UDP"), ("http", "TCP")):
        c.check(ports.get(name, {}).get("protocol") == proto, f"container port {name} over {proto}")

    # Probes: readiness means caught up (/readyz), liveness only process up (/healthz).
    rp, lp, sp = ct.get("readinessProbe"), ct.get("livenessProbe"), ct.get("startupProbe")
    if c.check(rp and lp and sp, "readiness, liveness and startup probes"):
        c.check(rp["httpGet"]["path"] == "/readyz" and rp["httpGet"]["port"] == "http", "readiness is /readyz")
        c.check(lp["httpGet"]["path"] == "/healthz" and lp["httpGet"]["port"] == "http", "liveness is /healthz")
        c.check(rp["httpGet"]["path"] != lp["httpGet"]["path"], "a catching-up follower must stay live")
        c.check(sp["periodSeconds"] * sp["failureThreshold"] >= 300, "start-up allows minutes of recovery")

    # Hooks: scale-up add-node (postStart), scale-down remove-node (preStop), and time to drain.
    lc = ct.get("lifecycle", {})
    c.check("prestop.sh" in " ".join(lc.get("preStop", {}).get("exec", {}).get("command", [])),
            "preStop hook runs prestop.sh")
    c.check("poststart.sh" in " ".join(lc.get("postStart", {}).get("exec", {}).get("command", [])),
            "postStart hook runs poststart.sh")
    env = env_of(ct)
    grace = ps.get("terminationGracePeriodSeconds", 30)
    drain = int(env.get("DRAIN_TIMEOUT_SECONDS") or 0)
    c.check(grace >= 60, f"terminationGracePeriodSeconds {grace} leaves no time for leadership transfer")
    c.check(0 < drain < grace, f"drain timeout {drain} must be positive and below the grace period {grace}")
    c.check(ct["command"][:2] == ["/usr/bin/tini", "--"], "tini is PID 1 and forwards SIGTERM")

    # Scheduling: never two nodes on one host (hard or soft), spread over zones.
    aa = ps.get("affinity", {}).get("podAntiAffinity", {})
    terms = [t for t in aa.get("requiredDuringSchedulingIgnoredDuringExecution", [])]
    terms += [t["podAffinityTerm"] for t in aa.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    c.check(any(t["topologyKey"] == "kubernetes.io/hostname" and matches(t["labelSelector"]["matchLabels"], labels)
                for t in terms), "pod anti-affinity across nodes")
    c.check(any(t["topologyKey"] == "topology.kubernetes.io/zone" and matches(t["labelSelector"]["matchLabels"], labels)
                for t in ps.get("topologySpreadConstraints", [])), "topology spread across zones")

    res = ct.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            c.check(r in res.get(kind, {}), f"resources.{kind}.{r} set")

    sc = ps.get("securityContext", {})
    c.check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, "pods run as non-root")
    c.check(ct.get("securityContext", {}).get("allowPrivilegeEscalation") is False, "no privilege escalation")
    c.check(ps.get("automountServiceAccountToken") is True, "the preStop hook needs the service account token")
    return sts, headless


def check_scripts(docs, sts, c):
    name = sts["metadata"]["name"] + "-scripts"
    cm = one(docs, "ConfigMap", c, name)
    if cm:
        data = cm["data"]
        c.check("cluster add-node" in data.get("poststart.sh", ""), "postStart runs settle cluster add-node")
        c.check("cluster remove-node" in data.get("prestop.sh", ""), "preStop runs settle cluster remove-node")
        c.check("--bootstrap" in data.get("start.sh", "") and "--join" in data.get("start.sh", ""),
                "start.sh bootstraps the initial members and joins the others")
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    c.check(vols.get("scripts", {}).get("configMap", {}).get("name") == name, "scripts ConfigMap mounted")
    state = one(docs, "ConfigMap", c, sts["metadata"]["name"] + "-state")
    return state, vols


def check_quorum(docs, args, sts, state, c):
    r = int(state["data"]["replicas"])
    initial = int(state["data"]["initial-members"])
    c.check(r == args.shard_replicas, f"replication factor {r} != {args.shard_replicas}")
    c.check(r % 2 == 1, "odd replication factor")
    c.check(r <= args.nodes, f"{args.nodes} nodes cannot hold {r} replicas of a shard")
    c.check(r <= initial <= args.nodes, f"initial members {initial} between {r} and {args.nodes}")
    c.check(int(state["data"]["shards"]) >= 1, "at least one shard")
    pdb = one(docs, "PodDisruptionBudget", c)
    if pdb:
        mu = pdb["spec"].get("maxUnavailable")
        c.check("minAvailable" not in pdb["spec"], "PDB uses maxUnavailable (independent of scale)")
        c.check(isinstance(mu, int) and 1 <= mu <= (r - 1) // 2,
                f"PDB maxUnavailable {mu} must be within 1..{(r - 1) // 2} for {r} replicas per shard")
        labels = sts["spec"]["template"]["metadata"]["labels"]
        c.check(matches(pdb["spec"]["selector"]["matchLabels"], labels), "PDB selects the pods")


def check_services(docs, sts, headless, c):
    labels = sts["spec"]["template"]["metadata"]["labels"]
    client = one(docs, "Service", c, sts["metadata"]["name"])
    if client:
        ports = {p["name"]: p for p in client["spec"]["ports"]}
        c.check(ports.get("quic", {}).get("protocol") == "UDP", "client Service: QUIC over UDP")
        c.check(ports.get("http", {}).get("protocol") == "TCP", "client Service: HTTP over TCP")
        c.check(matches(client["spec"]["selector"], labels), "client Service selects the pods")
        c.check(not client["spec"].get("publishNotReadyAddresses"), "clients reach ready nodes only")
    if headless:
        c.check(any(p["name"] == "peer" and p["protocol"] == "UDP" for p in headless["spec"]["ports"]),
                "headless Service carries the peer port")


def check_secrets(docs, args, sts, vols, c):
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    for vol, key_names, existing in (("tls", ("tls.crt", "tls.key"), args.tls_secret),
                                     ("auth", ("api-key",), args.auth_secret)):
        name = vols.get(vol, {}).get("secret", {}).get("secretName")
        if existing:
            c.check(name == existing, f"{vol} volume uses the existing Secret {existing} (got {name})")
            c.check(existing not in secrets, f"the chart must not create the existing Secret {existing}")
        elif c.check(name in secrets, f"{vol} Secret {name} rendered"):
            c.check(all(k in secrets[name]["data"] for k in key_names), f"{vol} Secret has {key_names}")
    role = one(docs, "Role", c)
    if role:
        rule = role["rules"][0]
        c.check(rule["resources"] == ["statefulsets/scale"] and rule["verbs"] == ["get"]
                and rule["resourceNames"] == [sts["metadata"]["name"]], "Role: get this StatefulSet's scale only")
    binding = one(docs, "RoleBinding", c)
    if binding:
        sa = sts["spec"]["template"]["spec"]["serviceAccountName"]
        c.check(binding["subjects"][0]["name"] == sa, "RoleBinding binds the pods' ServiceAccount")


def check_servicemonitor(docs, args, headless, c):
    sms = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if not args.servicemonitor:
        c.check(not sms, "no ServiceMonitor unless enabled")
        return
    if c.check(len(sms) == 1, "ServiceMonitor rendered") and headless:
        sm = sms[0]["spec"]
        c.check(matches(sm["selector"]["matchLabels"], headless["metadata"]["labels"]),
                "ServiceMonitor selects the headless Service (every pod, ready or not)")
        c.check(sm["endpoints"][0]["port"] == "http" and sm["endpoints"][0]["path"] == "/metrics",
                "ServiceMonitor scrapes http /metrics")


def check_networkpolicy(docs, sts, c):
    """When a NetworkPolicy is rendered, the peer (Raft) port is open to this release's pods only."""
    labels = sts["spec"]["template"]["metadata"]["labels"]
    peer_port = next(p["containerPort"] for p in sts["spec"]["template"]["spec"]["containers"][0]["ports"]
                     if p["name"] == "peer")
    for np in (d for d in docs if d["kind"] == "NetworkPolicy"):
        c.check(matches(np["spec"]["podSelector"]["matchLabels"], labels), "NetworkPolicy selects the pods")
        for rule in np["spec"].get("ingress", []):
            if any(p.get("port") == peer_port for p in rule.get("ports", [])):
                sources = rule.get("from", [])
                c.check(sources and all(set(s) == {"podSelector"} and matches(s["podSelector"]["matchLabels"], labels)
                                        for s in sources), "the peer port admits this release's pods only")


def run_checks(docs, args):
    c = Checker()
    sts, headless = check_statefulset(docs, args, c)
    if sts is not None:
        state, vols = check_scripts(docs, sts, c)
        if state:
            check_quorum(docs, args, sts, state, c)
        check_services(docs, sts, headless, c)
        check_secrets(docs, args, sts, vols, c)
        check_servicemonitor(docs, args, headless, c)
        check_networkpolicy(docs, sts, c)
    return c.failures


def _pod(docs):
    return next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]


def _container(docs):
    return _pod(docs)["containers"][0]


# Breakages the checks must catch (each applied alone to a copy of a correct render that has a
# ServiceMonitor and a NetworkPolicy): proves the checker is not vacuous.
MUTATIONS = {
    "PDB wider than the quorum": lambda d: next(x for x in d if x["kind"] == "PodDisruptionBudget")["spec"]
    .update(maxUnavailable=2),
    "no preStop drain": lambda d: _container(d)["lifecycle"].pop("preStop"),
    "no postStart add-node": lambda d: _container(d)["lifecycle"].pop("postStart"),
    "readiness on /healthz": lambda d: _container(d)["readinessProbe"]["httpGet"].update(path="/healthz"),
    "no anti-affinity": lambda d: _pod(d).pop("affinity"),
    "no zone spread": lambda d: _pod(d).pop("topologySpreadConstraints"),
    "short grace period": lambda d: _pod(d).update(terminationGracePeriodSeconds=30),
    "peers not published before ready": lambda d: next(
        x for x in d if x["kind"] == "Service" and x["spec"].get("clusterIP") == "None")["spec"]
    .pop("publishNotReadyAddresses"),
    "runs as root": lambda d: _pod(d)["securityContext"].update(runAsUser=0),
    "no memory limit": lambda d: _container(d)["resources"]["limits"].pop("memory"),
    "peer port open to anyone": lambda d: next(x for x in d if x["kind"] == "NetworkPolicy")["spec"]["ingress"][0]
    .pop("from"),
    "ServiceMonitor on the client Service": lambda d: next(x for x in d if x["kind"] == "ServiceMonitor")["spec"]
    ["selector"]["matchLabels"].update({"app.kubernetes.io/component": "client"}),
    "replication factor above the node count": lambda d: next(
        x for x in d if x["kind"] == "ConfigMap" and x["metadata"]["name"].endswith("-state"))["data"]
    .update(replicas="5"),
}


def self_test(docs, args):
    assert not run_checks(docs, args), "the unmutated render must pass"
    missed = []
    for name, mutate in MUTATIONS.items():
        broken = copy.deepcopy(docs)
        mutate(broken)
        if not run_checks(broken, args):
            missed.append(name)
    for name in missed:
        print(f"check_rendered: self-test: the checks missed: {name}", file=sys.stderr)
    if not missed:
        print(f"check_rendered: self-test: all {len(MUTATIONS)} breakages caught")
    return 1 if missed else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("rendered")
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--shard-replicas", type=int, required=True)
    p.add_argument("--servicemonitor", action="store_true")
    p.add_argument("--tls-secret", default="")
    p.add_argument("--auth-secret", default="")
    p.add_argument("--self-test", action="store_true", help="check that known breakages are caught")
    args = p.parse_args()
    docs = load(args.rendered)
    if args.self_test:
        return self_test(docs, args)
    failures = run_checks(docs, args)
    for f in failures:
        print(f"check_rendered: {args.rendered}: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
