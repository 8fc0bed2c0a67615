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
with open(os.path.join(d, "calls"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")
a = sys.argv[1:]
if a[:2] == ["cluster", "status"]:
    host = a[a.index("--target") + 1].split(":")[0]
    sys.exit(0 if os.path.exists(os.path.join(d, "status-ok-" + host)) else 1)
if a[:2] == ["cluster", "add-node"]:
    p = os.path.join(d, "add-fail-count")
    n = int(open(p).read()) if os.path.exists(p) else 0
    if n > 0:
        open(p, "w").write(str(n - 1))
        sys.exit(1)
    sys.exit(0)
if a[:2] == ["cluster", "remove-node"]:
    sys.exit(1 if os.path.exists(os.path.join(d, "remove-fails")) else 0)
sys.exit(0)
"""

STUB_CURL = r"""#!/bin/sh
[ -e "$STUB_DIR/scale.json" ] || exit 22
cat "$STUB_DIR/scale.json"
"""

NS, STS, PEERS = "ns", "t-settle", "t-settle-peers"


def host(i):
    return f"{STS}-{i}.{PEERS}.{NS}.svc.cluster.local"


class Pod:
    """One pod's world: a data volume, the state ConfigMap, stubs, and the scripts."""

    def __init__(self, root, scripts, ordinal, formed="false", initial=3, replicas=3):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix=f"pod{ordinal}-", dir=root))
        self.stub = self.dir / "stub"
        self.data = self.dir / "data"
        self.state = self.dir / "state"
        self.scripts = self.dir / "scripts"
        for d in (self.stub, self.data, self.state, self.scripts):
            d.mkdir(parents=True)
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
    (p.data / "node" / "CURRENT").write_text("x")
    (p.data / "removed").write_text("")
    assert p.run("start.sh").returncode == 0
    assert not (p.data / "node").exists() and not (p.data / "removed").exists()
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


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == f"{STS}-scripts"]
    assert len(cms) == 1, "render with release name 't' and namespace 'ns'"
    with tempfile.TemporaryDirectory(prefix="settle-hooks-") as root:
        cases(root, cms[0]["data"])
    print("test_hooks: start, postStart and preStop decisions ok")


if __name__ == "__main__":
    main()
