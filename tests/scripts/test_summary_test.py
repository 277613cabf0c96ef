#!/usr/bin/env python3
"""scripts/test_summary.py: the closing line of a test run and its exit status never disagree,
and a run in which nothing ran, or a gtest binary ran no case, is never green."""
import json
import os
import subprocess
import sys
import tempfile
import unittest

SUMMARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "test_summary.py")

GTEST_XML = """<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="{n}" failures="{f}" name="AllTests">
  <testsuite name="S" tests="{n}" failures="{f}">
{cases}
  </testsuite>
</testsuites>
"""


def gtest_xml(passing, failing):
    cases = [f'    <testcase name="ok{i}" status="run" result="completed" classname="S"/>' for i in range(passing)]
    cases += [f'    <testcase name="bad{i}" status="run" result="completed" classname="S">'
              f'<failure message="x"/></testcase>' for i in range(failing)]
    return GTEST_XML.format(n=passing + failing, f=failing, cases="\n".join(cases))


class Run:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        self.results = os.path.join(self.dir.name, "results")
        os.mkdir(self.results)
        self.log = os.path.join(self.dir.name, "testlog.json")

    def gtest(self, binary, passing, failing):
        with open(os.path.join(self.results, binary + ".xml"), "w") as f:
            f.write(gtest_xml(passing, failing))

    def meson(self, name, binary, result):
        with open(self.log, "a") as f:
            f.write(json.dumps({"name": name, "command": ["/build/" + binary], "result": result}) + "\n")

    def summary(self, meson_status=0):
        p = subprocess.run([sys.executable, SUMMARY, "--results", self.results, "--log", self.log,
                            "--meson-status", str(meson_status)], capture_output=True, text=True)
        return p.returncode, p.stdout.strip()


class TestSummary(unittest.TestCase):
    def test_all_passing_is_green(self):
        r = Run()
        r.gtest("unit_tests", 5, 0)
        r.meson("unit", "unit_tests", "OK")
        r.meson("smoke", "python3", "OK")
        self.assertEqual(r.summary(), (0, "tests: 6 passed, 0 failed, 0 skipped"))

    def test_one_binary_in_two_meson_tests_counts_both_files(self):
        # GoogleTest writes site_test.xml, then site_test_1.xml for the second run.
        r = Run()
        r.gtest("site_test", 10, 0)
        r.gtest("site_test_1", 15, 0)
        r.meson("integration-site", "site_test", "OK")
        r.meson("integration-site-bgp", "site_test", "OK")
        self.assertEqual(r.summary(), (0, "tests: 25 passed, 0 failed, 0 skipped"))
        r.gtest("site_test_1", 14, 1)
        status, line = r.summary()
        self.assertEqual(status, 1)
        self.assertTrue(line.startswith("tests: 24 passed, 1 failed"), line)

    def test_second_run_without_results_fails(self):
        r = Run()
        r.gtest("site_test", 10, 0)
        r.meson("integration-site", "site_test", "OK")
        r.meson("integration-site-bgp", "site_test", "OK")
        status, line = r.summary()
        self.assertEqual(status, 1, line)

    def test_no_log_means_nothing_ran_and_fails(self):
        # `--suite integraton`: meson says "No suitable tests defined" and exits 0.
        code, line = Run().summary(0)
        self.assertEqual(code, 1)
        self.assertIn("no test ran", line)

    def test_failed_rebuild_fails_even_without_log(self):
        code, line = Run().summary(125)
        self.assertEqual(code, 1)
        self.assertIn("meson exited 125", line)

    def test_gtest_binary_with_zero_cases_fails(self):
        r = Run()
        r.gtest("unit_tests", 0, 0)
        r.meson("unit", "unit_tests", "OK")
        r.meson("smoke", "python3", "OK")
        code, line = r.summary()
        self.assertEqual(code, 1)
        self.assertIn("unit: ran no test case", line)

    def test_failing_gtest_binary_counted_once(self):
        r = Run()
        r.gtest("unit_tests", 3, 2)
        r.meson("unit", "unit_tests", "FAIL")
        self.assertEqual(r.summary(1), (1, "tests: 3 passed, 2 failed, 0 skipped"))

    def test_crash_after_last_case_counts_one_failure(self):
        r = Run()
        r.gtest("unit_tests", 3, 0)
        r.meson("unit", "unit_tests", "FAIL")
        code, line = r.summary(1)
        self.assertEqual(code, 1)
        self.assertTrue(line.startswith("tests: 3 passed, 1 failed, 0 skipped"), line)

    def test_timeout_without_xml_counts(self):
        r = Run()
        r.meson("integration", "gateway_test", "TIMEOUT")
        code, line = r.summary(1)
        self.assertEqual(code, 1)
        self.assertIn("integration: TIMEOUT", line)

    def test_meson_failure_without_failed_test_is_not_green(self):
        r = Run()
        r.meson("smoke", "python3", "OK")
        code, line = r.summary(2)
        self.assertEqual(code, 1)
        self.assertIn("1 failed", line)

    def test_only_skips_is_not_green(self):
        r = Run()
        r.meson("smoke", "python3", "SKIP")
        code, line = r.summary()
        self.assertEqual(code, 1)
        self.assertIn("nothing passed", line)

    def test_line_and_status_agree(self):
        for meson_status in (0, 1):
            for result in ("OK", "FAIL"):
                r = Run()
                r.meson("t", "python3", result)
                code, line = r.summary(meson_status)
                self.assertEqual(code == 0, " 0 failed" in line and "(" not in line, line)


if __name__ == "__main__":
    unittest.main()
