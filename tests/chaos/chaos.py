#!/usr/bin/env python3
"""Chaos run against the Compose cluster (deploy/compose): faults while clients enrol users,
register devices, pay and revoke; then heal, read everything back and check it
(checker.py). Bounded in time; stops by itself.

    python3 tests/chaos/chaos.py --duration 120 --out chaos-out      # the short run (CI)
    python3 tests/chaos/chaos.py --duration 1800 --out chaos-long    # a long run

It needs the image (deploy/image/build.sh), docker-compose, root (nsenter and iptables for
network cuts), the host's yunkey binary (--bin, default: the static build), and Python's
`cryptography`. With --fresh (the default) it recreates the cluster: `docker-compose down
-v`, `up -d`, `init.sh`; with --keep it leaves the cluster running at the end.

Exit status: 0 when every check passed, 1 when the checker found an anomaly (reported in
OUT/report.md and OUT/anomalies.json with the history), 2 when the run itself failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import checker

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "deploy" / "compose"
PROJECT = "yunkey"
COORDS = {1: "coord-1", 2: "coord-2", 3: "coord-3"}
CHIPS = ["chip-1", "chip-2", "chip-3", "chip-4"]
ADDR = {"coord-1": "10.231.9.11", "coord-2": "10.231.9.12", "coord-3": "10.231.9.13",
        "chip-1": "10.231.9.21", "chip-2": "10.231.9.22", "chip-3": "10.231.9.23", "chip-4": "10.231.9.24"}
# Codes after which an operation may or may not have taken effect.
UNKNOWN = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNKNOWN", "INTERNAL", "CANCELLED", "ERROR", "TIMEOUT", "ABORTED"}
MAX_OPS_PER_USER = 40
# Holders each user key has in the Compose cluster (the coordinators' default --replicas).
REPLICAS = 2
# How long after healing repair may take to bring every user back to R holders: the chip-down
# threshold (10 s), a full scan for under-replicated users (at least every 60 s), and the moves.
REPAIR_WAIT_S = 150


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*args: str, check: bool = True, timeout: float = 120, quiet: bool = False) -> subprocess.CompletedProcess:
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: exit {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


def container(svc: str) -> str:
    return f"{PROJECT}_{svc}_1"


class Cluster:
    """The Compose cluster and the CLI pointed at it."""

    def __init__(self, bin_path: str, tmp: Path):
        self.bin = bin_path
        self.tmp = tmp
        creds = COMPOSE / "creds"
        endpoints = ",".join(f"https://{ADDR[c]}:7443" for c in COORDS.values())
        base = {k: v for k, v in os.environ.items() if not k.startswith("YUNKEY_")}
        self.business = dict(base, YUNKEY_ENDPOINT=endpoints, YUNKEY_CA=str(creds / "backend/ca.pem"),
                             YUNKEY_CERT=str(creds / "backend/client.pem"),
                             YUNKEY_KEY=str(creds / "backend/client-key.pem"), YUNKEY_PIN="24681357")
        self.operator = dict(base, YUNKEY_ENDPOINT=endpoints, YUNKEY_CA=str(creds / "ops/ca.pem"),
                             YUNKEY_CERT=str(creds / "ops/operator.pem"),
                             YUNKEY_KEY=str(creds / "ops/operator-key.pem"))

    def compose(self, *args: str, timeout: float = 300) -> None:
        p = subprocess.run(["docker-compose", *args], cwd=COMPOSE, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args)}: {p.stderr[-2000:]}")

    def recreate(self) -> None:
        log("cluster: docker-compose down -v; up -d; init.sh")
        self.compose("down", "-v", "--remove-orphans")
        self.compose("up", "-d")
        p = subprocess.run([str(COMPOSE / "init.sh")], capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            raise RuntimeError(f"init.sh failed: {p.stdout[-2000:]} {p.stderr[-2000:]}")

    def cli(self, args: list[str], env: dict, timeout: float) -> tuple[str, str, dict]:
        """Runs the CLI with --json. Returns (type, code, value)."""
        try:
            # stdin is never a terminal here: `terminal pay` then shows the transaction without
            # asking for a confirmation.
            p = subprocess.run([self.bin, "--json", *args], env=env, capture_output=True, text=True,
                               timeout=timeout, cwd=self.tmp, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return "info", "TIMEOUT", {}
        try:
            out = json.loads(p.stdout) if p.stdout.strip() else {}
        except json.JSONDecodeError:
            out = {}
        if p.returncode == 0:
            return "ok", "OK", out
        code = out.get("error", {}).get("code", "ERROR")
        value = {"message": out.get("error", {}).get("message", p.stderr.strip()[-500:])}
        return ("info" if code in UNKNOWN else "fail"), code, value

    def leader(self) -> int | None:
        t, _, v = self.cli(["--timeout", "2", "ctl", "status"], self.operator, 10)
        return v.get("leader_id") if t == "ok" and v.get("leader_id") else None


class Nemesis:
    """Faults on the cluster's containers. Every fault is recorded and healed."""

    def __init__(self, cluster: Cluster, rng: random.Random):
        self.c = cluster
        self.rng = rng
        self.cut: set[str] = set()  # containers with DROP rules
        self.paused: set[str] = set()
        self.stopped: set[str] = set()

    def pid(self, svc: str) -> int:
        return int(sh("docker", "inspect", "-f", "{{.State.Pid}}", container(svc)).stdout.strip())

    def running(self, svc: str) -> bool:
        p = sh("docker", "inspect", "-f", "{{.State.Running}}", container(svc), check=False)
        return p.stdout.strip() == "true"

    def random_coord(self, leader_bias: bool) -> str:
        if leader_bias:
            lead = self.c.leader()
            if lead in COORDS:
                return COORDS[lead]
        return self.rng.choice(list(COORDS.values()))

    # Faults: each returns the targets; heal() undoes them all.
    def kill9(self, svc: str) -> None:
        """kill -9 of the process; Docker's restart policy starts it again."""
        pid = self.pid(svc)
        if pid:
            sh("kill", "-9", str(pid), check=False)

    def kill_hold(self, svc: str) -> None:
        """kill -9 and keep it down until healed."""
        sh("docker", "kill", "-s", "KILL", container(svc), check=False)
        self.stopped.add(svc)

    def pause(self, svc: str) -> None:
        sh("docker", "pause", container(svc), check=False)
        self.paused.add(svc)

    def restart(self, svc: str) -> None:
        sh("docker", "restart", "-t", "5", container(svc), check=False)

    def partition(self, side_a: list[str], side_b: list[str]) -> None:
        """Drops every packet between the two sides, in each container's own netns."""
        for a in side_a:
            for b in side_b:
                for x, y in ((a, b), (b, a)):
                    if not self.running(x):
                        continue
                    pid = str(self.pid(x))
                    for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
                        sh("nsenter", "-t", pid, "-n", "iptables", "-A", chain, flag, ADDR[y], "-j", "DROP")
                    self.cut.add(x)

    def heal(self) -> None:
        for svc in list(self.cut):
            if self.running(svc):
                pid = str(self.pid(svc))
                for chain in ("INPUT", "OUTPUT"):
                    sh("nsenter", "-t", pid, "-n", "iptables", "-F", chain, check=False)
        self.cut.clear()
        for svc in list(self.paused):
            sh("docker", "unpause", container(svc), check=False)
        self.paused.clear()
        for svc in list(COORDS.values()) + CHIPS:
            if not self.running(svc):
                sh("docker", "start", container(svc), check=False)
        self.stopped.clear()

    def inject(self, name: str) -> list[str]:
        r = self.rng
        coords = list(COORDS.values())
        if name == "kill9-leader":
            t = self.random_coord(True)
            self.kill9(t)
            return [t]
        if name == "kill9-coordinator":
            t = self.random_coord(False)
            self.kill9(t)
            return [t]
        if name == "kill-hold-coordinator":
            t = self.random_coord(r.random() < 0.5)
            self.kill_hold(t)
            return [t]
        if name == "kill-chip":
            t = r.choice(CHIPS)
            self.kill_hold(t)
            return [t]
        if name == "pause-coordinator":
            t = self.random_coord(r.random() < 0.5)
            self.pause(t)
            return [t]
        if name == "pause-chip":
            t = r.choice(CHIPS)
            self.pause(t)
            return [t]
        if name == "restart-coordinator":
            t = self.random_coord(False)
            self.restart(t)
            return [t]
        if name == "partition-leader":
            t = self.random_coord(True)
            others = [c for c in coords if c != t]
            self.partition([t], others)
            return [t, "vs"] + others
        if name == "partition-zones":
            # A coordinator majority with zone a's chips, the minority with zone b's.
            r.shuffle(coords)
            a, b = coords[:2] + ["chip-1", "chip-2"], coords[2:] + ["chip-3", "chip-4"]
            self.partition(a, b)
            return a + ["vs"] + b
        if name == "combo":
            # Several at once: a coordinator killed, a chip paused, another coordinator cut
            # from its peers (never two coordinators down for good: a majority stays).
            t1, t2 = r.sample(coords, 2)
            chip = r.choice(CHIPS)
            self.kill9(t1)
            self.pause(chip)
            self.partition([t2], [c for c in coords if c not in (t2, t1)])
            return [f"kill9:{t1}", f"pause:{chip}", f"cut:{t2}"]
        raise ValueError(name)


NEMESES = ["kill9-leader", "kill9-coordinator", "kill-hold-coordinator", "kill-chip", "pause-coordinator",
           "pause-chip", "restart-coordinator", "partition-leader", "partition-zones", "combo"]


class Workload:
    """Clients enrolling, registering, paying, revoking and reading concurrently. Every
    operation is recorded with its call and return time."""

    def __init__(self, cluster: Cluster, rng_seed: int, t0: float, history_file):
        self.c = cluster
        self.seed = rng_seed
        self.t0 = t0
        self.lock = threading.Lock()
        self.history: list[dict] = []
        self.file = history_file
        self.users: dict[str, dict] = {}
        self.next_id = 0

    def record(self, client: int, user: str, f: str, call: float, ret: float, t: str, code: str,
               value: dict, phase: str = "run") -> dict:
        with self.lock:
            h = {"id": self.next_id, "client": client, "user": user, "f": f, "call": round(call - self.t0, 4),
                 "ret": round(ret - self.t0, 4), "type": t, "code": code, "value": value, "phase": phase}
            self.next_id += 1
            self.history.append(h)
            self.file.write(json.dumps(h) + "\n")
            self.file.flush()
            if user in self.users:
                self.users[user]["ops"] += 1
            return h

    def op(self, client: int, user: str, f: str, args: list[str], env: dict, timeout: float = 25,
           phase: str = "run") -> dict:
        call = time.time()
        t, code, out = self.c.cli(args, env, timeout)
        ret = time.time()
        value: dict = {}
        if t != "ok":
            value = out
        elif f == "enroll":
            value = {"activation_code": out.get("activation_code")}
        elif f == "register":
            value = {"device_id": out.get("device_id")}
        elif f == "pay":
            value = {k: out.get(k) for k in ("transaction_id", "canonical_transaction", "tx_hash", "signature",
                                              "certificate_chain", "chip_id")}
        elif f in ("read", "revoke"):
            value = user_value(out)
        return self.record(client, user, f, call, ret, t, code, value, phase)

    def client(self, n: int, deadline: float) -> None:
        rng = random.Random(self.seed * 1000 + n)
        mine: list[str] = []
        count = 0
        biz = self.c.business
        while time.time() < deadline:
            live = [u for u in mine if self.users[u]["ops"] < MAX_OPS_PER_USER - 2]
            choice = rng.random()
            if not live or choice < 0.15:
                user = f"c{n}-u{count}"
                count += 1
                self.users[user] = {"ops": 0, "code": None, "keystore": str(self.c.tmp / f"ks-{user}"),
                                    "device": False, "revoked": False}
                mine.append(user)
                h = self.op(n, user, "enroll", ["--timeout", "8", "user", "enroll", user, "--request-id", f"enroll-{user}"], biz)
                if h["type"] == "ok":
                    self.users[user]["code"] = h["value"]["activation_code"]
                continue
            user = rng.choice(live)
            u = self.users[user]
            if u["code"] is None:
                # An unanswered enrolment: retry with the same request id (same result).
                h = self.op(n, user, "enroll", ["--timeout", "8", "user", "enroll", user, "--request-id", f"enroll-{user}"], biz)
                if h["type"] == "ok":
                    u["code"] = h["value"]["activation_code"]
            elif not u["device"]:
                h = self.op(n, user, "register", ["--timeout", "8", "terminal", "register", "--user", user,
                                                  "--activation-code", u["code"], "--keystore", u["keystore"]], biz)
                if h["type"] == "ok":
                    u["device"] = True
                elif h["type"] == "info" or "used" in json.dumps(h["value"]):
                    # It may have registered; the keystore tells on the next pay.
                    u["device"] = os.path.isdir(u["keystore"])
            elif choice < 0.20:
                h = self.op(n, user, "revoke", ["--timeout", "8", "user", "revoke", user, "--reason", "chaos"], biz)
                u["revoked"] = u["revoked"] or h["type"] == "ok"
            elif u["revoked"] and choice < 0.9:
                # A revoked user: mostly reads, now and then a payment that must be refused.
                self.op(n, user, "read", ["--timeout", "8", "user", "show", user], biz)
            elif choice < 0.40:
                self.op(n, user, "read", ["--timeout", "8", "user", "show", user], biz)
            else:
                self.op(n, user, "pay", ["--timeout", "8", "terminal", "pay", "--user", user, "--payee", "Shop",
                                         "--amount", f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
                                         "--currency", "EUR", "--ttl", "120", "--keystore", u["keystore"]], biz)


def user_value(out: dict) -> dict:
    status = out.get("status", "")
    return {"revoked": status == "USER_STATUS_REVOKED", "devices": len(out.get("devices", [])),
            "activation_pending": bool(out.get("activation_pending")), "public_key": out.get("public_key"),
            "holders": out.get("holders", [])}


def chip_states(cluster: Cluster) -> dict[str, str]:
    """Chip id -> state as `yunkey ctl chip list` reports it."""
    t, _, v = cluster.cli(["--timeout", "10", "ctl", "chip", "list"], cluster.operator, 30)
    if t != "ok":
        raise RuntimeError(f"ctl chip list failed after healing: {v}")
    return {c["chip_id"]: c["state"] for c in v.get("chips", [])}


def final_reads(work: "Workload", cluster: Cluster) -> dict[str, dict]:
    """Every user as the cluster answers after healing (recorded as final reads)."""
    final: dict[str, dict] = {}
    for user in sorted(work.users):
        h = work.op(-1, user, "read", ["--timeout", "20", "user", "show", user], cluster.business, 60, "final")
        if h["type"] == "ok":
            final[user] = h["value"]
        elif h["code"] != "NOT_FOUND":
            raise RuntimeError(f"final read of {user} failed: {h}")
    return final


def wait_healthy(cluster: Cluster, seconds: float) -> float:
    """Waits until a Raft write commits and every coordinator is up; returns the wait."""
    start = time.time()
    while time.time() - start < seconds:
        t, _, _ = cluster.cli(["--timeout", "3", "ctl", "probe"], cluster.operator, 10)
        if t == "ok":
            t, _, v = cluster.cli(["--timeout", "3", "ctl", "status"], cluster.operator, 10)
            nodes = v.get("nodes", []) if t == "ok" else []
            if len(nodes) == 3 and all(n.get("reachable") and n.get("role") in ("leader", "follower") for n in nodes):
                return time.time() - start
        time.sleep(1)
    raise RuntimeError(f"the cluster did not become healthy within {seconds} s of healing")


def report(out: Path, args, t0: float, end: float, history, nemeses, final, results) -> str:
    lin, ack, sig = results
    anomalies = lin["anomalies"] + ack + sig["anomalies"]
    avail = checker.availability(history, t0 - t0, end - t0)
    outs = checker.outages(history, nemeses, end - t0)
    per_kind: dict[str, float] = {}
    for o in outs:
        per_kind[o["nemesis"]] = max(per_kind.get(o["nemesis"], 0), o["longest_outage_s"])
    counts = {t: sum(1 for h in history if h["type"] == t and h.get("phase") != "final") for t in ("ok", "fail", "info")}
    by_f: dict[str, dict] = {}
    for h in history:
        if h.get("phase") == "final":
            continue
        by_f.setdefault(h["f"], {"ok": 0, "fail": 0, "info": 0})[h["type"]] += 1
    secs_up = sum(1 for r in avail if r["ok"] > 0)
    summary = {
        "seed": args.seed, "duration_s": round(end - t0, 1), "clients": args.clients,
        "faults_injected": len(nemeses), "requests": sum(counts.values()), "outcomes": counts, "by_operation": by_f,
        "users": lin["users"], "signatures_verified": sig["verified"], "anomalies": len(anomalies),
        "seconds_with_an_acknowledged_request": f"{secs_up}/{len(avail)}",
        "longest_outage_per_nemesis_s": per_kind,
    }
    (out / "report.json").write_text(json.dumps({"summary": summary, "availability": avail, "outages": outs}, indent=1))
    (out / "anomalies.json").write_text(json.dumps(anomalies, indent=1))
    lines = [f"# chaos run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}", "",
             "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(v) if isinstance(v, dict) else v} |" for k, v in summary.items()]
    lines += ["", "## Faults", "", "| at (s) | nemesis | targets | healed (s) | longest outage (s) |", "|---|---|---|---|---|"]
    for n, o in zip(nemeses, outs):
        lines.append(f"| {n['start']:.1f} | {n['name']} | {' '.join(n['targets'])} | {n['healed']:.1f} | {o['longest_outage_s']} |")
    lines += ["", "## Availability (acknowledged / refused / unanswered requests per second)", "", "```"]
    for r in avail:
        bar = "#" * min(r["ok"], 60)
        lines.append(f"{r['second']:5d} {r['ok']:3d} {r['fail']:3d} {r['info']:3d} {bar}")
    lines += ["```", ""]
    if anomalies:
        lines += ["## Anomalies", "", "See anomalies.json for each with its history.", ""]
        lines += [f"- {a['check']}: {a.get('user', '')} {a.get('why', '')}" for a in anomalies]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return json.dumps(summary, indent=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=120, help="seconds of workload under faults")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--interval", type=float, default=12, help="seconds between the start of two faults")
    ap.add_argument("--fault-length", type=float, default=6, help="seconds a fault lasts before healing")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--out", default="chaos-out")
    ap.add_argument("--bin", default=str(REPO / "target-static/x86_64-unknown-linux-gnu/release/yunkey"))
    ap.add_argument("--keep", action="store_true", help="reuse a running cluster and leave it running")
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="yunkey-chaos-"))
    cluster = Cluster(args.bin, tmp)
    rng = random.Random(args.seed)
    log(f"seed {args.seed}, {args.duration:.0f} s, {args.clients} clients, output in {out}")
    if not args.keep:
        cluster.recreate()
    wait_healthy(cluster, 120)

    nemesis = Nemesis(cluster, rng)
    nemeses: list[dict] = []
    t0 = time.time()
    deadline = t0 + args.duration
    with open(out / "history.jsonl", "w") as hf:
        work = Workload(cluster, args.seed, t0, hf)
        threads = [threading.Thread(target=work.client, args=(n, deadline), daemon=True) for n in range(args.clients)]
        for t in threads:
            t.start()
        order = list(NEMESES)
        rng.shuffle(order)
        i = 0
        try:
            time.sleep(min(5, args.duration / 4))
            while time.time() + args.fault_length < deadline:
                name = order[i % len(order)]
                i += 1
                start = time.time()
                targets = nemesis.inject(name)
                log(f"fault {name} on {' '.join(targets)}")
                time.sleep(args.fault_length)
                nemesis.heal()
                healed = time.time()
                nemeses.append({"name": name, "targets": targets, "start": start - t0, "healed": healed - t0})
                time.sleep(max(0, min(args.interval - args.fault_length, deadline - time.time())))
        finally:
            nemesis.heal()
        for t in threads:
            t.join(timeout=60)
        end = time.time()
        log("workload done; healed; waiting for the cluster")
        waited = wait_healthy(cluster, 180)
        log(f"healthy after {waited:.1f} s; final reads")
        # Repair may still be moving keys off chips that were down: read until every user is
        # back at R holders on chips that are up, or the repair deadline passes (the checker
        # then reports who is not).
        repair_deadline = time.time() + REPAIR_WAIT_S
        while True:
            fleet = {"replicas": REPLICAS, "chips": chip_states(cluster)}
            final = final_reads(work, cluster)
            missing = checker.check_replicas(final, REPLICAS, fleet["chips"])
            if not missing or time.time() > repair_deadline:
                break
            log(f"{len(missing)} users not at R holders yet; reading again")
            time.sleep(5)
    (out / "final.json").write_text(json.dumps(final, indent=1))
    (out / "fleet.json").write_text(json.dumps(fleet, indent=1))
    (out / "nemeses.json").write_text(json.dumps(nemeses, indent=1))

    history = work.history
    lin = checker.check_linearizable(history)
    ack = checker.check_acknowledged(history, final) + checker.check_replicas(final, REPLICAS, fleet["chips"])
    sig = checker.check_signatures(history, final)
    summary = report(out, args, t0, end, history, nemeses, final, (lin, ack, sig))
    print(summary)
    if not args.keep:
        cluster.compose("down", "-v", "--remove-orphans")
    bad = len(lin["anomalies"]) + len(ack) + len(sig["anomalies"])
    log(f"{'ANOMALIES: ' + str(bad) if bad else 'no anomaly'}; report in {out / 'report.md'}")
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - the run itself failed: say so, exit 2
        log(f"chaos run failed: {e}")
        sys.exit(2)
