"""The checker must reject what is not linearizable, not only accept what is:
`python3 -m unittest tests/chaos/test_checker.py`."""

import unittest

from checker import check_linearizable, check_replicas, check_user, user_histories


def op(f, call, ret, type_="ok", user="u", **value):
    return {"user": user, "f": f, "call": call, "ret": ret, "type": type_, "code": value.pop("code", "OK"), "value": value}


def read(call, ret, revoked=False, devices=0, pending=True, **kw):
    return op("read", call, ret, revoked=revoked, devices=devices, activation_pending=pending, **kw)


def linearizable(history):
    (ops,) = user_histories(history).values()
    return check_user(ops)[0]


class Checker(unittest.TestCase):
    def test_sequential_history(self):
        h = [op("enroll", 0, 1), read(2, 3), op("register", 4, 5), read(6, 7, devices=1, pending=False),
             op("pay", 8, 9), op("revoke", 10, 11), read(12, 13, revoked=True, devices=1, pending=False),
             op("pay", 14, 15, "fail", code="PERMISSION_DENIED")]
        self.assertTrue(linearizable(h))

    def test_stale_read_after_acknowledged_revoke(self):
        h = [op("enroll", 0, 1), op("revoke", 2, 3), read(4, 5)]
        self.assertFalse(linearizable(h))

    def test_concurrent_read_may_see_either(self):
        for seen in (False, True):
            h = [op("enroll", 0, 1), op("revoke", 2, 5), read(3, 4, revoked=seen, pending=not seen)]
            self.assertTrue(linearizable(h), seen)

    def test_lost_registration(self):
        h = [op("enroll", 0, 1), op("register", 2, 3), read(4, 5, devices=0, pending=True)]
        self.assertFalse(linearizable(h))

    def test_pay_after_acknowledged_revoke(self):
        h = [op("enroll", 0, 1), op("register", 2, 3), op("revoke", 4, 5), op("pay", 6, 7)]
        self.assertFalse(linearizable(h))

    def test_unanswered_revoke_may_land_late_but_not_vanish(self):
        base = [op("enroll", 0, 1), op("revoke", 2, None, "info")]
        gone = {"revoked": True, "pending": False}
        self.assertTrue(linearizable(base + [read(3, 4), read(5, 6, **gone)]))
        self.assertTrue(linearizable(base + [read(3, 4)]))
        self.assertFalse(linearizable(base + [read(3, 4, **gone), read(5, 6)]))

    def test_read_of_unknown_user(self):
        h = [op("read", 0, 1, "fail", code="NOT_FOUND"), op("enroll", 2, 3)]
        self.assertTrue(linearizable(h))
        h = [op("enroll", 0, 1), op("read", 2, 3, "fail", code="NOT_FOUND")]
        self.assertFalse(linearizable(h))

    def test_revocation_voids_a_pending_activation_code(self):
        # From the long run of seed 9: a registration that never answered and never happened,
        # then a revocation; the record shows no pending activation and no device.
        h = [op("enroll", 0, 1), op("register", 2, None, "info", code="UNAVAILABLE"),
             read(3, 4, pending=True), op("revoke", 5, 6),
             read(7, 8, revoked=True, devices=0, pending=False)]
        self.assertTrue(linearizable(h))
        h = [op("enroll", 0, 1), op("revoke", 2, 3), op("register", 4, 5)]
        self.assertFalse(linearizable(h))

    def test_two_devices_from_one_activation_code(self):
        h = [op("enroll", 0, 1), op("register", 2, 3), op("register", 4, 5)]
        self.assertFalse(linearizable(h))

    def test_report_names_the_user(self):
        h = [op("enroll", 0, 1, user="a"), op("revoke", 2, 3, user="a"), read(4, 5, user="a"),
             op("enroll", 0, 1, user="b")]
        out = check_linearizable(h)
        self.assertEqual(out["users"], 2)
        self.assertEqual([a["user"] for a in out["anomalies"]], ["a"])


class Replicas(unittest.TestCase):
    chips = {"chip-1": "up", "chip-2": "up", "chip-3": "down"}

    def anomalies(self, holders, revoked=False):
        return check_replicas({"u": {"holders": holders, "revoked": revoked}}, 2, self.chips)

    def test_r_distinct_holders_up(self):
        self.assertEqual(self.anomalies(["chip-1", "chip-2"]), [])

    def test_below_r(self):
        self.assertIn("1 holders", self.anomalies(["chip-1"])[0]["why"])

    def test_a_chip_twice(self):
        self.assertIn("twice", self.anomalies(["chip-1", "chip-1"])[0]["why"])

    def test_a_holder_down_or_unregistered(self):
        self.assertIn("down", self.anomalies(["chip-1", "chip-3"])[0]["why"])
        self.assertIn("not registered", self.anomalies(["chip-1", "chip-9"])[0]["why"])

    def test_revoked_users_are_not_repaired(self):
        self.assertEqual(self.anomalies(["chip-3"], revoked=True), [])


if __name__ == "__main__":
    unittest.main()
