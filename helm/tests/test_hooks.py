#!/usr/bin/env python3
"""Runs the chart's start script and lifecycle hooks, exactly as rendered into the ConfigMap,
against a stub `settle` and a stub `curl` (the Kubernetes API), and checks the decisions they
make: bootstrap vs join vs restart, the bootstrap list, add-node on scale-up, remove-node only on
a scale-down, and never a drain on a restart or below the replication factor.

usage: test_hooks.py RENDERED.yaml   (a render with the default release name "t", namespace "ns")
"""
import json
import os
import pathlib
import stat
import subprocess
import sys
import tempfile

import yaml

# The stub records every call (one JSON array of arguments per line) and answers from files:
#   status-ok-<host>   `cluster status --target <host>:...` succeeds
#   add-fail-count     the first N `cluster add-node` calls fail
#   remove-fails       `cluster remove-node` fails
STUB_SETTLE = r"""#!/usr/bin/env python3
import json, os, sys
d = os.environ["STUB_DIR"]
cluster = os.environ.get("CLUSTER_DIR")  # shared by the pods of a lifecycle test: the membership
with open(os.path.join(d, "calls"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
a = sys.argv[1:]


def members():
    p = os.path.join(cluster, "members")
    return json.load(open(p)) if os.path.exists(p) else []


def save(m):
    json.dump(sorted(m), open(os.path.join(cluster, "members"), "w"))


if a[0] == "node":
    data = a[a.index("--data") + 1]
    os.makedirs(data, exist_ok=True)
    open(os.path.join(data, "CURRENT"), "w").write("x")
    if cluster and "--bootstrap" in a and not members():
        save([int(m.split("=")[0]) for m in a[a.index("--bootstrap") + 1].split(",")])
    sys.exit(0)
if a[:2] == ["cluster", "status"]:
    host = a[a.index("--target") + 1].split(":")[0]
    ok = [os.path.join(x, "status-ok-" + host) for x in (d, cluster) if x]
    sys.exit(0 if any(os.path.exists(p) for p in ok) else 1)
node_id = int(a[a.index("--id") + 1]) if "--id" in a else None
if a[:2] == ["cluster", "add-node"]:
    p = os.path.join(d, "add-fail-count")
    n = int(open(p).read()) if os.path.exists(p) else 0
    if n > 0:
        open(p, "w").write(str(n - 1))
        sys.exit(1)
    if cluster:
        save(set(members()) | {node_id})
    sys.exit(0)
if a[:2] == ["cluster", "remove-node"]:
    if os.path.exists(os.path.join(d, "remove-fails")):
        sys.exit(1)
    if cluster:
        save(set(members()) - {node_id})
    sys.exit(0)
sys.exit(0)
"""

STUB_CURL = r"""#!/bin/sh
f="${SCALE_FILE:-$STUB_DIR/scale.json}"
[ -e "$f" ] || exit 22
cat "$f"
"""

NS, STS, PEERS = "ns", "t-settle", "t-settle-peers"


def host(i):
    return f"{STS}-{i}.{PEERS}.{NS}.svc.cluster.local"


class Pod:
    """One pod's world: a data volume, the state ConfigMap, stubs, and the scripts."""

    def __init__(self, root, scripts, ordinal, formed="false", initial=3, replicas=3, volume=None, cluster=None):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"pod{ordinal}-", dir=root))
        self.stub = self.dir / "stub"
        self.data = pathlib.Path(volume) if volume else self.dir / "data"
        self.state = self.dir / "state"
        self.scripts = self.dir / "scripts"
        for d in (self.stub, self.data, self.state, self.scripts):
            d.mkdir(parents=True, exist_ok=True)
        for name, text in scripts.items():
            (self.scripts / name).write_text(text)
        for name, text in (("settle", STUB_SETTLE), ("curl", STUB_CURL)):
            p = self.stub / name
            p.write_text(text)
            p.chmod(p.stat().st_mode | stat.S_IEXEC)
        for k, v in (("initial-members", initial), ("formed", formed), ("shards", 64), ("replicas", replicas)):
            (self.state / k).write_text(f"{v}\n")
        self.env = dict(
            os.environ,
            STUB_DIR=str(self.stub), SETTLE_BIN=str(self.stub / "settle"), CURL_BIN=str(self.stub / "curl"),
            DATA_ROOT=str(self.data), STATE_DIR=str(self.state), SA_DIR=str(self.stub),
            POD_NAME=f"{STS}-{ordinal}", POD_NAMESPACE=NS, STS_NAME=STS, PEER_SERVICE=PEERS,
            CLIENT_SERVICE=STS, CLUSTER_DOMAIN="cluster.local", QUIC_PORT="4433", PEER_PORT="4434",
            HTTP_PORT="8080", HOOK_LOG_TO_PID1="false", RETRY_PAUSE_SECONDS="0",
        )
        if cluster:
            self.env.update(CLUSTER_DIR=str(cluster), SCALE_FILE=str(pathlib.Path(cluster) / "scale.json"))

    def run(self, script, *args, **env):
        e = dict(self.env, **env)
        return subprocess.run(["bash", str(self.scripts / script), *args], env=e,
                              capture_output=True, text=True, timeout=60)

    def calls(self):
        p = self.stub / "calls"
        return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []

    def node_call(self):
        nodes = [c for c in self.calls() if c and c[0] == "node"]
        assert len(nodes) == 1, f"expected one `settle node`, got {nodes}"
        return nodes[0]


def flag(args, name):
    return args[args.index(name) + 1] if name in args else None


def scale(pod, body):
    (pod.stub / "scale.json").write_text(body)


def cases(root, scripts):
    def new(ordinal, **kw):
        return Pod(root, scripts, ordinal, **kw)

    # Initial member, empty volume, cluster not formed: bootstrap with every initial member.
    p = new(0)
    r = p.run("start.sh", "--max-in-flight", "9")
    assert r.returncode == 0, r.stderr
    a = p.node_call()
    assert flag(a, "--id") == "1", a
    want = ",".join(f"{i + 1}={host(i)}:4434" for i in range(3))
    assert flag(a, "--bootstrap") == want, (flag(a, "--bootstrap"), want)
    assert "--join" not in a and flag(a, "--shards") == "64" and flag(a, "--replicas") == "3", a
    assert flag(a, "--peer-listen") == "0.0.0.0:4434" and flag(a, "--http") == "0.0.0.0:8080", a
    # Peers and operators reach the pod by its stable name, not by 0.0.0.0 or a changing pod IP.
    assert flag(a, "--advertise") == host(0), a
    assert a[-2:] == ["--max-in-flight", "9"], "extraArgs come last"
    assert not (p.data / "joining").exists()
    # postStart does nothing for a bootstrapping node.
    assert p.run("poststart.sh").returncode == 0 and not [c for c in p.calls() if "add-node" in c]

    # Restart: the volume has data, so neither --bootstrap nor --join.
    p = new(1)
    (p.data / "node").mkdir()
    (p.data / "node" / "CURRENT").write_text("x")
    assert p.run("start.sh").returncode == 0
    a = p.node_call()
    assert flag(a, "--id") == "2" and "--bootstrap" not in a and "--join" not in a, a

    # Scale-up: ordinal beyond the initial members joins through the first member that answers,
    # then postStart registers it with add-node (retrying until accepted).
    p = new(3)
    (p.stub / f"status-ok-{host(1)}").write_text("")
    assert p.run("start.sh").returncode == 0
    a = p.node_call()
    assert flag(a, "--id") == "4" and flag(a, "--join") == f"{host(1)}:4434" and "--bootstrap" not in a, a
    assert (p.data / "joining").exists()
    (p.stub / "add-fail-count").write_text("2")
    r = p.run("poststart.sh")
    assert r.returncode == 0, r.stderr
    adds = [c for c in p.calls() if c[:2] == ["cluster", "add-node"]]
    assert len(adds) == 3, adds
    assert flag(adds[-1], "--id") == "4" and flag(adds[-1], "--peer") == f"{host(3)}:4434", adds[-1]
    assert flag(adds[-1], "--target") == f"{STS}.{NS}.svc.cluster.local:4433", adds[-1]
    assert not (p.data / "joining").exists()

    # add-node that never succeeds: the hook fails after its deadline (the container restarts).
    p = new(4)
    p.run("start.sh")
    (p.stub / "add-fail-count").write_text("1000000")
    r = p.run("poststart.sh", JOIN_TIMEOUT_SECONDS="0")
    assert r.returncode != 0 and (p.data / "joining").exists()

    # Lost disk on an initial member after the cluster formed: join, never a second bootstrap.
    p = new(0, formed="true")
    assert p.run("start.sh").returncode == 0
    a = p.node_call()
    assert "--bootstrap" not in a and flag(a, "--join") == f"{host(1)}:4434", a

    # A node drained by an earlier scale-down starts afresh and joins.
    p = new(3)
    (p.data / "node").mkdir()
    (p.data / "node" / "OLD.sst").write_text("x")
    (p.data / "removed").write_text("")
    assert p.run("start.sh").returncode == 0
    assert not (p.data / "node" / "OLD.sst").exists() and not (p.data / "removed").exists()
    assert flag(p.node_call(), "--join") == f"{host(0)}:4434"

    # preStop on a scale-down from 4 to 3: pod 3 drains with remove-node and marks its volume.
    p = new(3)
    scale(p, '{"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "t-settle"},\n'
             ' "spec": {"replicas": 3}, "status": {"replicas": 4, "selector": "a=b"}}')
    r = p.run("prestop.sh")
    assert r.returncode == 0, r.stderr
    removes = [c for c in p.calls() if c[:2] == ["cluster", "remove-node"]]
    assert len(removes) == 1 and flag(removes[0], "--id") == "4", removes
    assert (p.data / "removed").exists()

    # ... but a failed drain leaves the volume unmarked.
    p = new(3)
    scale(p, '{"spec":{"replicas":3},"status":{"replicas":4}}')
    (p.stub / "remove-fails").write_text("")
    assert p.run("prestop.sh").returncode == 0
    assert not (p.data / "removed").exists()

    # preStop on a restart (ordinal below the desired count): no drain.
    p = new(2)
    scale(p, '{"spec":{"replicas":3},"status":{"replicas":3}}')
    assert p.run("prestop.sh").returncode == 0
    assert not [c for c in p.calls() if "remove-node" in c]

    # Scale to 0 (replicas omitted) or below the replication factor: never drain.
    for body in ('{"spec":{},"status":{"replicas":3}}', '{"spec":{"replicas":2},"status":{"replicas":3}}'):
        p = new(2)
        scale(p, body)
        assert p.run("prestop.sh").returncode == 0
        assert not [c for c in p.calls() if "remove-node" in c], body

    # The API server cannot be read: treated as a restart, no drain.
    p = new(3)
    assert p.run("prestop.sh").returncode == 0
    assert not [c for c in p.calls() if "remove-node" in c]

    # Drain disabled by values.
    p = new(3)
    scale(p, '{"spec":{"replicas":3}}')
    assert p.run("prestop.sh", DRAIN_ENABLED="false").returncode == 0
    assert not p.calls()

    # A host name without an ordinal is refused before anything runs.
    p = new(0)
    r = p.run("start.sh", POD_NAME="weird")
    assert r.returncode != 0 and "ordinal" in r.stderr and not p.calls()


def lifecycle(root, scripts):
    """A release's life across pod lifetimes: volumes persist per ordinal, the membership lives in
    the stub cluster, and each step checks who is a member afterwards."""
    cluster = pathlib.Path(root) / "cluster"
    cluster.mkdir()
    volumes = {i: pathlib.Path(root) / f"volume-{i}" for i in range(5)}
    formed = {"value": "false"}

    def pod(i):
        return Pod(root, scripts, i, formed=formed["value"], volume=volumes[i], cluster=cluster)

    def desired(n):
        (cluster / "scale.json").write_text(json.dumps({"spec": {"replicas": n} if n else {}}))

    def start(i):
        p = pod(i)
        assert p.run("start.sh").returncode == 0
        assert p.run("poststart.sh").returncode == 0
        return p

    def members():
        return json.loads((cluster / "members").read_text())

    for i in range(3):  # every initial member answers status once it runs
        (cluster / f"status-ok-{host(i)}").write_text("")

    desired(3)
    for i in range(3):
        start(i)
    assert members() == [1, 2, 3], members()
    formed["value"] = "true"  # the install's follow-up `helm upgrade --set cluster.formed=true`

    desired(5)  # scale up: pods 3 and 4 join and add themselves
    for i in (3, 4):
        start(i)
    assert members() == [1, 2, 3, 4, 5], members()

    desired(3)  # scale down: pods 4 and 3 drain before they stop
    for i in (4, 3):
        assert pod(i).run("prestop.sh").returncode == 0
    assert members() == [1, 2, 3], members()

    p = pod(1)  # a rolling restart of pod 1: no drain, restarts on its data
    assert p.run("prestop.sh").returncode == 0
    p = start(1)
    assert "--join" not in p.node_call() and "--bootstrap" not in p.node_call()
    assert members() == [1, 2, 3], members()

    desired(4)  # scale up again: pod 3's old volume is discarded and it joins afresh
    p = start(3)
    assert flag(p.node_call(), "--join") and members() == [1, 2, 3, 4], members()

    # Pod 0 loses its disk: the operator removes node 1, the pod comes back empty and joins.
    pod(0).run("prestop.sh")
    subprocess.run([str(pod(0).stub / "settle"), "cluster", "remove-node", "--id", "1"],
                   env=pod(0).env, check=True)
    assert members() == [2, 3, 4], members()
    for f in volumes[0].iterdir():
        subprocess.run(["rm", "-rf", str(f)], check=True)
    p = start(0)
    assert "--bootstrap" not in p.node_call() and flag(p.node_call(), "--join") == f"{host(1)}:4434"
    assert members() == [1, 2, 3, 4], members()

    desired(0)  # scale to zero: nobody drains, the membership stays for the way back
    for i in range(4):
        assert pod(i).run("prestop.sh").returncode == 0
    assert members() == [1, 2, 3, 4], members()


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{STS}-scripts"]
    assert len(cms) == 1, "render with release name 't' and namespace 'ns'"
    with tempfile.TemporaryDirectory(prefix="settle-hooks-") as root:
        cases(root, cms[0]["data"])
        lifecycle(root, cms[0]["data"])
    print("test_hooks: start, postStart and preStop decisions ok; lifecycle install, scale 3-5-3-4, "
          "restart, lost disk, scale to 0 ok")


if __name__ == "__main__":
    main()
