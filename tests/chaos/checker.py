"""Checks a chaos run's history: what the cluster acknowledged must hold.

The history is a list of operations, one JSON object each (written by chaos.py):

    {"id": 17, "client": 2, "user": "u2-5", "f": "register", "call": 12.31, "ret": 12.58,
     "type": "ok" | "fail" | "info", "code": "OK" | "PERMISSION_DENIED" | ..., "value": {...}}

`ok`: the cluster answered success; `fail`: it answered a definite refusal (the operation
had no effect); `info`: no answer or a transient one (UNAVAILABLE, DEADLINE_EXCEEDED, a
timeout): the operation may or may not have taken effect, at any time after its call.

What is checked:
1. Linearizability of every user's record, with a Wing & Gong search (Lowe's variant with
   memoization of (linearized set, state)), user by user (linearizability is local, so the
   per-user histories compose). The model is the user record: enrolled, activation code used,
   devices, revoked. Reads (`user show`, linearizable) must see exactly the model's state;
   a payment signed at some point must find the user enrolled, not revoked, with a device.
2. Every acknowledged enrolment, registration and revocation is present in the final reads
   taken after healing.
3. Every signature returned verifies, over the canonical transaction bytes returned with it,
   under the user certificate returned with it, and that certificate carries the public key
   the cluster lists for the user; all user certificates chain to one user CA.
4. No transaction hash was signed twice (every authorization is used once).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Optional

INF = math.inf

# Model state of one user: (enrolled, code_used, devices, revoked).
INITIAL = (False, False, 0, False)


@dataclass
class Op:
    """One operation of a user's history."""

    idx: int
    f: str
    call: float
    ret: float  # INF for `info`
    type: str
    value: dict


def step(state, op: Op):
    """Applies `op` to `state`. Returns the list of possible next states (empty: the op
    cannot happen in this state with the result it returned)."""
    enrolled, code_used, devices, revoked = state
    f, t = op.f, op.type
    if t == "fail":
        # A definite refusal changed nothing; a read that found no user says it is not there.
        if f == "read" and op.value.get("code") == "NOT_FOUND":
            return [state] if not enrolled else []
        return [state]
    if f == "enroll":
        # Retries carry the same request id, so a second enrolment returns the first result.
        return [(True, code_used, devices, revoked)]
    if f == "register":
        if enrolled and not revoked and not code_used:
            return [(enrolled, True, devices + 1, revoked)]
        return []
    if f == "pay":
        # Signing changes no user state, but it needs an active user with a device.
        if t == "info":
            return [state]
        return [state] if enrolled and not revoked and devices > 0 else []
    if f == "revoke":
        # Revocation also voids a pending activation code (RevokeUser clears it).
        return [(enrolled, True, devices, True)] if enrolled else []
    if f == "read":
        if t == "info":
            return [state]
        v = op.value
        seen = (True, not v["activation_pending"], v["devices"], v["revoked"])
        return [state] if seen == state else []
    raise ValueError(f"unknown operation {f!r}")


def check_user(ops: list[Op], budget: int = 2_000_000) -> tuple[bool, Optional[str]]:
    """Wing & Gong search with memoization. Returns (linearizable, explanation). `info`
    operations may be linearized anywhere after their call, or left out."""
    n = len(ops)
    if n > 62:
        # The bitmask below holds 63 operations; chaos.py keeps users shorter than that.
        raise ValueError(f"history of {n} operations is too long for one user")
    must = 0
    for op in ops:
        if op.type != "info":
            must |= 1 << op.idx
    seen: set = set()
    stack = [(0, INITIAL)]
    explored = 0
    deepest = (0, INITIAL)
    while stack:
        done, state = stack.pop()
        if done & must == must:
            return True, None
        key = (done, state)
        if key in seen:
            continue
        seen.add(key)
        explored += 1
        if explored > budget:
            return False, f"search budget of {budget} states exhausted (undecided)"
        if bin(done).count("1") > bin(deepest[0]).count("1"):
            deepest = (done, state)
        # An op may come next only if no other pending op returned before it was called.
        pending = [op for op in ops if not done >> op.idx & 1]
        horizon = min((op.ret for op in pending), default=INF)
        for op in pending:
            if op.call > horizon:
                continue
            for nxt in step(state, op):
                stack.append((done | 1 << op.idx, nxt))
    done, state = deepest
    stuck = [op for op in ops if not done >> op.idx & 1 and op.type != "info"]
    first = min(stuck, key=lambda o: o.ret) if stuck else None
    why = (
        f"no order explains the history: after {bin(done).count('1')} operations "
        f"(state enrolled={state[0]} code_used={state[1]} devices={state[2]} revoked={state[3]}) "
        f"nothing fits; first unexplained: #{first.idx} {first.f} {first.type} "
        f"{json.dumps(first.value, sort_keys=True)}"
        if first
        else "no order explains the history"
    )
    return False, why


def user_histories(history: list[dict]) -> dict[str, list[Op]]:
    """Splits the history by user, keeping only what the model covers."""
    out: dict[str, list[Op]] = {}
    for h in history:
        if h.get("user") is None or h["f"] not in ("enroll", "register", "pay", "revoke", "read"):
            continue
        ops = out.setdefault(h["user"], [])
        ret = INF if h["type"] == "info" else h["ret"]
        value = dict(h.get("value") or {})
        value["code"] = h.get("code")
        ops.append(Op(len(ops), h["f"], h["call"], ret, h["type"], value))
    return out


def check_linearizable(history: list[dict]) -> dict:
    """Checks every user's record. Returns counts and every anomaly with its history."""
    anomalies = []
    users = user_histories(history)
    ops = 0
    for user, hist in sorted(users.items()):
        ops += len(hist)
        ok, why = check_user(hist)
        if not ok:
            anomalies.append(
                {
                    "check": "linearizable",
                    "user": user,
                    "why": why,
                    "history": [h for h in history if h.get("user") == user],
                }
            )
    return {"users": len(users), "operations": ops, "anomalies": anomalies}


def check_acknowledged(history: list[dict], final: dict[str, dict]) -> list[dict]:
    """Every acknowledged enrolment, registration and revocation is in the final state."""
    anomalies = []
    registered: dict[str, int] = {}
    for h in history:
        if h["type"] != "ok" or h.get("phase") == "final":
            continue
        user = h.get("user")
        got = final.get(user)
        if h["f"] == "enroll" and got is None:
            anomalies.append({"check": "acknowledged enrolment lost", "user": user, "op": h})
        elif h["f"] == "register":
            registered[user] = registered.get(user, 0) + 1
        elif h["f"] == "revoke" and (got is None or not got["revoked"]):
            anomalies.append({"check": "acknowledged revocation lost", "user": user, "op": h, "final": got})
    for user, n in registered.items():
        got = final.get(user)
        if got is None or got["devices"] < n:
            anomalies.append(
                {"check": "acknowledged registration lost", "user": user, "registered": n, "final": got}
            )
    return anomalies


def check_replicas(final: dict[str, dict], replicas: int, chips: dict[str, str]) -> list[dict]:
    """After healing, every user that is not revoked has exactly `replicas` holders, on
    distinct chips that are in the registry and up (`chips`: chip id -> state)."""
    anomalies = []
    for user, got in sorted(final.items()):
        if got.get("revoked"):
            continue
        holders = got.get("holders", [])
        why = None
        if len(set(holders)) != len(holders):
            why = f"a chip is listed twice: {holders}"
        elif len(holders) != replicas:
            why = f"{len(holders)} holders, {replicas} wanted: {holders}"
        else:
            gone = [h for h in holders if chips.get(h) != "up"]
            if gone:
                why = f"holders not up after healing: {[(h, chips.get(h, 'not registered')) for h in gone]}"
        if why:
            anomalies.append({"check": "user not at R holders after healing", "user": user, "why": why,
                              "final": got})
    return anomalies


def check_signatures(history: list[dict], final: dict[str, dict]) -> dict:
    """Every returned signature verifies under the user's certificate; no hash twice."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    anomalies = []
    hashes_seen: dict[str, dict] = {}
    issuers = set()
    verified = 0
    for h in history:
        if h["f"] != "pay" or h["type"] != "ok":
            continue
        v = h["value"]
        certs = x509.load_pem_x509_certificates(v["certificate_chain"].encode())
        user_cert = certs[0]
        issuers.add(user_cert.issuer.rfc4514_string())
        if len(certs) > 1:
            try:
                user_cert.verify_directly_issued_by(certs[1])
            except (ValueError, TypeError, InvalidSignature) as e:
                anomalies.append({"check": "certificate not issued by the user CA", "op": h, "error": str(e)})
        try:
            user_cert.public_key().verify(
                bytes.fromhex(v["signature"]),
                v["canonical_transaction"].encode(),
                ec.ECDSA(hashes.SHA256()),
            )
            verified += 1
        except InvalidSignature:
            anomalies.append({"check": "signature does not verify", "op": h})
        final_user = final.get(h["user"])
        if final_user is not None and final_user.get("public_key"):
            spki = user_cert.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            listed = bytes.fromhex(final_user["public_key"])
            der = user_cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            if listed not in (spki, der):
                anomalies.append({"check": "certificate key is not the user's key", "op": h})
        tx = v["tx_hash"]
        if tx in hashes_seen:
            anomalies.append({"check": "transaction signed twice", "op": h, "first": hashes_seen[tx]})
        hashes_seen[tx] = h
    if len(issuers) > 1:
        anomalies.append({"check": "user certificates from several issuers", "issuers": sorted(issuers)})
    return {"verified": verified, "anomalies": anomalies}


def availability(history: list[dict], start: float, end: float) -> list[dict]:
    """Second by second: operations that completed ok, failed, or got no answer."""
    secs = max(1, int(math.ceil(end - start)))
    rows = [{"second": s, "ok": 0, "fail": 0, "info": 0} for s in range(secs)]
    for h in history:
        if h.get("phase") == "final":
            continue
        s = int(h["ret"] - start)
        if 0 <= s < secs:
            rows[s][h["type"]] += 1
    return rows


def outages(history: list[dict], nemeses: list[dict], end: float) -> list[dict]:
    """For each fault: the longest time without any acknowledged operation while it lasted
    (and until 10 s after its healing)."""
    oks = sorted(h["ret"] for h in history if h["type"] == "ok" and h.get("phase") != "final")
    out = []
    for n in nemeses:
        t0 = n["start"]
        t1 = min(end, (n.get("healed") or end) + 10)
        inside = [t for t in oks if t0 <= t <= t1]
        points = [t0] + inside + [t1]
        longest = max(b - a for a, b in zip(points, points[1:]))
        out.append({"nemesis": n["name"], "targets": n["targets"], "start": t0,
                    "longest_outage_s": round(longest, 2)})
    return out


def main(path: str) -> int:
    """`python3 checker.py RUN_DIR`: checks a recorded run again."""
    import pathlib

    run = pathlib.Path(path)
    history = [json.loads(line) for line in (run / "history.jsonl").open()]
    final = json.loads((run / "final.json").read_text())
    lin = check_linearizable(history)
    ack = check_acknowledged(history, final)
    sig = check_signatures(history, final)
    bad = lin["anomalies"] + ack + sig["anomalies"]
    fleet = run / "fleet.json"
    if fleet.exists():
        f = json.loads(fleet.read_text())
        bad += check_replicas(final, f["replicas"], f["chips"])
    print(f"users {lin['users']}, operations {lin['operations']}, signatures verified "
          f"{sig['verified']}, anomalies {len(bad)}")
    for a in bad:
        print(json.dumps(a, sort_keys=True)[:4000])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
