#!/usr/bin/env python3
"""tests/e2e/calyx_e2e.py, the driver of the e2e suite, never reports success it did not see:
`calyxctl explain` failing (exit other than 0 or 1) fails the run instead of letting any drop
pass, and the closing line "All seven frames as the seed says" appears only when every step
ran to its end (not when an unexpected exception escapes). Across two hosts (site_e2e.py), a
connection is judged by every host that decides, and a refusal must be counted where it was
refused; the site's claims hold only when an outcome of the frames proves each. No QEMU, no
calyx: fakes."""
import argparse
import contextlib
import io
import os
import stat
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
REPO = Path(__file__).resolve().parent.parent.parent
import calyx_e2e  # noqa: E402
import site_e2e  # noqa: E402


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


def site_scenario(ctl_by_host=None):
    """A SiteScenario as after prepare() and start(): the seed's instances placed as the test
    places them, each host's calyx a fake calyxctl."""
    args = argparse.Namespace(demo=False, keep=False)
    s = site_e2e.SiteScenario(args)
    s.roles = {"public": ({"name": "public-1", "ipv4": "203.0.113.10"}, {}),
               "nat": ({"name": "default-1", "ipv4": "10.10.0.5"}, {}),
               "private": ({"name": "private-1", "ipv4": "10.20.0.7"}, {})}
    s.role_host = dict(site_e2e.PLACEMENT)
    for n, name in enumerate(site_e2e.HOSTS, 1):
        h = site_e2e.SiteHost(name, f"198.51.100.1{n}")
        if ctl_by_host:
            h.calyx = calyx_e2e.Calyx(Path("/nonexistent/calyx"), ctl_by_host[name], Path("/x.yaml"),
                                      Path("/dev/null"), "/tmp/x.sock")
            h.calyx.use_ctl = True
        s.hosts[name] = h
    s.say = lambda _text: None
    return s


def outcome(src, dst, port, connected, seen="", reason="", counted=0, counted_on=""):
    c = calyx_e2e.Check(src, dst, "tcp", port, None)
    return calyx_e2e.Outcome(c, connected, connected, "", seen=seen, reason=reason, counted=counted,
                             counted_on=counted_on)


class SiteFile(unittest.TestCase):
    DEMO = (REPO / "conf" / "demo.yaml").read_text()

    def test_every_instance_gets_its_host_and_only_the_sites_sections_stay(self):
        text = site_e2e.site_text(self.DEMO, {"public-1": "compute-2", "default-1": "compute-1",
                                              "private-1": "compute-2"})
        cfg = calyx_e2e.load_yaml(text)
        self.assertEqual(sorted(cfg), ["instances", "networks", "security_groups"])
        self.assertEqual({i["name"]: i["host"] for i in cfg["instances"]},
                         {"public-1": "compute-2", "default-1": "compute-1", "private-1": "compute-2"})
        # The frames still apply: frame 1 keeps no rule, frame 7 all the demo's.
        self.assertNotIn("direction:", calyx_e2e.frame_config(text, 1))
        self.assertEqual(calyx_e2e.frame_config(text, 7), text)

    def test_an_instance_missing_from_the_demo_fails(self):
        with self.assertRaises(calyx_e2e.Failure):
            site_e2e.site_text(self.DEMO, {"db-9": "compute-1"})


class SiteJudge(unittest.TestCase):
    def test_a_refusal_on_the_destination_host_is_the_verdict_and_counted_there(self):
        with tempfile.TemporaryDirectory() as d:
            s = site_scenario({"compute-2": fake_calyxctl(d, 0, "allowed"),  # public-1's egress
                               "compute-1": fake_calyxctl(d, 1, "  dropped as sg_no_ingress_rule: no rule")})
            o = outcome("public", "nat", 80, False)
            o.expected = False
            deltas = {"compute-1": {"uplink": {"sg_no_ingress_rule": 2}}, "compute-2": {}}
            s.judge([o], deltas)
            self.assertEqual((o.reason, o.counted, o.counted_on), ("sg_no_ingress_rule", 2, "compute-1 uplink"))
            self.assertEqual(o.problems, [])

    def test_a_refusal_not_counted_where_it_was_refused_is_a_problem(self):
        with tempfile.TemporaryDirectory() as d:
            s = site_scenario({"compute-2": fake_calyxctl(d, 0, "allowed"),
                               "compute-1": fake_calyxctl(d, 1, "  dropped as sg_no_ingress_rule: no rule")})
            o = outcome("public", "nat", 80, False)
            o.expected = False
            # Counted on the source's host only: not where the rules refused it.
            deltas = {"compute-1": {}, "compute-2": {"public-1": {"sg_no_ingress_rule": 2}}}
            s.judge([o], deltas)
            self.assertIn("no sg_no_ingress_rule drop counted on port compute-1 uplink", o.problems)


class SiteClaims(unittest.TestCase):
    BGP_ROUTE = "203.0.113.10 via 198.51.100.12 dev br0 proto bird metric 32\n"

    def proven(self):
        return [(6, outcome("private", "nat", 4545, True, seen="10.20.0.7")),
                (2, outcome("public", "nat", 80, False, reason="sg_no_ingress_rule", counted=2,
                            counted_on="compute-1 uplink")),
                (3, outcome(calyx_e2e.INTERNET, "public", 443, True, seen=calyx_e2e.NS_ROUTER)),
                (7, outcome("nat", calyx_e2e.INTERNET, 443, True, seen="198.51.100.11")),
                (5, outcome("nat", "public", 3333, True, seen="10.10.0.5"))]

    def failures(self, history, route=BGP_ROUTE):
        s = site_scenario()
        s.history = history
        s.fabric_route = lambda _address: route
        s.site_checks()
        return s.failures

    def test_every_claim_proven_is_green(self):
        self.assertEqual(self.failures(self.proven()), [])

    def test_a_nat_instance_masqueraded_towards_another_host_fails(self):
        h = self.proven()
        h[4] = (5, outcome("nat", "public", 3333, True, seen="198.51.100.11"))
        self.assertEqual(len(self.failures(h)), 1)
        self.assertIn("not towards an instance of the other host", self.failures(h)[0])

    def test_a_refusal_counted_on_the_source_host_proves_nothing_of_the_destination(self):
        h = self.proven()
        h[1] = (2, outcome("public", "nat", 80, False, reason="sg_no_ingress_rule", counted=2,
                           counted_on="compute-2 public-1"))
        self.assertIn("sg_no_ingress_rule on the destination host", " ".join(self.failures(h)))

    def test_the_internet_reaching_the_public_instance_by_a_static_route_fails(self):
        failures = self.failures(self.proven(), "203.0.113.10 via 198.51.100.12 dev br0\n")
        self.assertIn("by its BGP route", " ".join(failures))

    def test_an_outcome_with_a_problem_proves_nothing(self):
        h = self.proven()
        h[0][1].problems.append("the destination saw 10.20.0.99")
        self.assertIn("its source unchanged", " ".join(self.failures(h)))


if __name__ == "__main__":
    unittest.main()
