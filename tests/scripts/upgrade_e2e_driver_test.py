#!/usr/bin/env python3
"""tests/e2e/upgrade_e2e.py's verdicts on fakes (no QEMU, no calyx): a stream that lost,
repeated or garbled a byte, a reconnect (a second connection, or one not from the host address),
a connection that carried nothing after the upgrade, each fails; the stall is measured where it
is."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import upgrade_e2e  # noqa: E402

HOST = "198.51.100.10"


def report(peers=(f"{HOST}:40000",), stream_errors=(), sequence_errors=(), session_errors=(), connected=1.0):
    return {"stream": {"peers": list(peers), "errors": list(stream_errors), "sequence_errors": list(sequence_errors),
                       "receipts": [], "bytes": 0},
            "session": {"errors": list(session_errors), "connected": connected, "requests": []}}


GOOD = {"stream_after": 1000, "session_after": 10}


class SequenceTest(unittest.TestCase):
    def feed(self, *chunks):
        s = upgrade_e2e.Sequence()
        for c in chunks:
            s.feed(c)
        return s

    def test_numbers_split_anywhere_are_in_sequence(self):
        s = self.feed(b"1\n2\n3", b"\n4\n", b"5\n6\n7\n8", b"")
        self.assertEqual(s.errors, [])
        self.assertEqual(s.numbers, 7)

    def test_a_lost_line_breaks_it(self):
        self.assertTrue(self.feed(b"1\n2\n4\n").errors)

    def test_a_repeated_line_breaks_it(self):
        self.assertTrue(self.feed(b"1\n2\n2\n3\n").errors)

    def test_a_lost_byte_breaks_it(self):
        self.assertTrue(self.feed(b"9\n10\n1\n12\n").errors)

    def test_garbage_breaks_it(self):
        self.assertTrue(self.feed(b"1\n2\nx3\n").errors)


class VerdictTest(unittest.TestCase):
    def test_a_clean_run_has_no_verdict(self):
        self.assertEqual(upgrade_e2e.connection_verdicts(report(), GOOD, HOST), [])

    def test_a_reconnect_fails(self):
        v = upgrade_e2e.connection_verdicts(report(peers=(f"{HOST}:40000", f"{HOST}:40001")), GOOD, HOST)
        self.assertTrue(any("reconnected" in x for x in v), v)

    def test_a_stream_not_masqueraded_fails(self):
        v = upgrade_e2e.connection_verdicts(report(peers=("10.10.0.5:40000",)), GOOD, HOST)
        self.assertTrue(any("not masqueraded" in x for x in v), v)

    def test_broken_sequence_or_session_fails(self):
        self.assertTrue(upgrade_e2e.connection_verdicts(report(sequence_errors=["expected 3"]), GOOD, HOST))
        self.assertTrue(upgrade_e2e.connection_verdicts(report(stream_errors=["closed"]), GOOD, HOST))
        self.assertTrue(upgrade_e2e.connection_verdicts(report(session_errors=["broke"]), GOOD, HOST))
        self.assertTrue(upgrade_e2e.connection_verdicts(report(connected=None), GOOD, HOST))

    def test_nothing_after_the_upgrade_fails(self):
        self.assertTrue(upgrade_e2e.connection_verdicts(report(), {"stream_after": 0, "session_after": 10}, HOST))
        self.assertTrue(upgrade_e2e.connection_verdicts(report(), {"stream_after": 1, "session_after": 0}, HOST))


class StallTest(unittest.TestCase):
    def test_the_longest_gap_around_the_upgrade(self):
        times = [0.0, 0.1, 0.2, 5.0, 5.1, 7.9, 8.0]
        stall, at = upgrade_e2e.longest_stall(times, 4.0, 10.0)
        self.assertAlmostEqual(stall, 4.8)
        self.assertAlmostEqual(at, 0.2)

    def test_a_stall_not_over_at_the_end_counts(self):
        stall, at = upgrade_e2e.longest_stall([0.0, 1.0, 2.0], 1.5, 9.0)
        self.assertAlmostEqual(stall, 7.0)
        self.assertAlmostEqual(at, 2.0)

    def test_measure(self):
        r = report()
        r["stream"]["receipts"] = [(t / 10, 100) for t in range(50)] + [(7.0, 100), (7.1, 100)]
        r["session"]["requests"] = [(t / 20, 0.002) for t in range(100)] + [(5.0, 0.6), (5.7, 0.002)]
        m = upgrade_e2e.measure(r, 5.0, 5.5, 8.0)
        self.assertAlmostEqual(m["stream_stall_ms"], 2100, places=0)
        self.assertAlmostEqual(m["stream_rate"], 1000, places=0)
        self.assertEqual(m["stream_after"], 200)
        self.assertEqual(m["session_slow_requests"], 1)
        self.assertEqual(m["session_after"], 2)


if __name__ == "__main__":
    unittest.main()
