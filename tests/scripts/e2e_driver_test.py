#!/usr/bin/env python3
"""tests/e2e/calyx_e2e.py, the driver of the e2e suite, never reports success it did not see:
`calyxctl explain` failing (exit other than 0 or 1) fails the run instead of letting any drop
pass, and the closing line "All seven frames as the seed says" appears only when every step
ran to its end (not when an unexpected exception escapes). No QEMU, no calyx: fakes."""
import contextlib
import io
import os
import stat
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import calyx_e2e  # noqa: E402


def fake_calyxctl(directory, exit_code, output=""):
    path = Path(directory) / f"calyxctl-{exit_code}"
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{output}'\nexit {exit_code}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


class Explain(unittest.TestCase):
    def calyx(self, ctl):
        c = calyx_e2e.Calyx(Path("/nonexistent/calyx"), ctl, Path("/nonexistent.yaml"), Path("/dev/null"), "/tmp/x.sock")
        c.use_ctl = True
        return c

    def test_a_denial_is_read_with_its_reason(self):
        with tempfile.TemporaryDirectory() as d:
            ctl = fake_calyxctl(d, 1, "  dropped as sg_no_ingress_rule: no rule")
            allowed, reason, _ = self.calyx(ctl).explain("a", "b", "tcp", 22)
            self.assertFalse(allowed)
            self.assertEqual(reason, "sg_no_ingress_rule")

    def test_a_failing_calyxctl_fails_the_run(self):
        with tempfile.TemporaryDirectory() as d:
            ctl = fake_calyxctl(d, 2, "calyxctl: cannot connect")
            with self.assertRaises(calyx_e2e.Failure) as e:
                self.calyx(ctl).explain("a", "b", "tcp", 22)
            self.assertIn("exit 2", str(e.exception))


class FakeScenario:
    """Stands in for calyx_e2e.Scenario: every step passes unless `broken` names it."""
    broken = None

    def __init__(self, args):
        self.failures, self.started = [], 0.0

    def __getattr__(self, step):
        def run(*_args):
            if step == FakeScenario.broken:
                raise RuntimeError(f"bug in {step}")
        return run

    def fail(self, msg):
        self.failures.append(msg)


class ClosingLine(unittest.TestCase):
    def run_main(self, broken):
        FakeScenario.broken = broken
        out = io.StringIO()
        saved = calyx_e2e.Scenario, calyx_e2e.os.geteuid, calyx_e2e.seed_checks
        calyx_e2e.Scenario, calyx_e2e.os.geteuid, calyx_e2e.seed_checks = FakeScenario, lambda: 0, lambda: []
        try:
            with contextlib.redirect_stdout(out):
                status = calyx_e2e.main(["calyx_e2e.py", "--calyx", "/nonexistent/calyx"])
        finally:
            calyx_e2e.Scenario, calyx_e2e.os.geteuid, calyx_e2e.seed_checks = saved
        return status, out.getvalue()

    def test_every_step_passing_is_green(self):
        status, out = self.run_main(None)
        self.assertEqual(status, 0, out)
        self.assertIn("All seven frames as the seed says", out)

    def test_an_escaping_exception_is_red_and_says_so(self):
        status, out = self.run_main("explain_examples")
        self.assertEqual(status, 1, out)
        self.assertNotIn("All seven frames as the seed says", out)
        self.assertIn("RuntimeError: bug in explain_examples", out)


if __name__ == "__main__":
    unittest.main()
