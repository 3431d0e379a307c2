"""Runs every tests/integration/test_*.py and prints a closing 'N passed, N failed' line."""
import os
import sys
import unittest

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
pattern = sys.argv[1] if len(sys.argv) > 1 else "test_*.py"
suite = unittest.defaultTestLoader.discover(here, pattern=pattern, top_level_dir=here)
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
# A setUpClass error is reported as an error of no test (it is not in testsRun).
class_errors = sum(1 for t, _ in result.errors if type(t).__name__ == "_ErrorHolder")
test_failed = len(result.failures) + len(result.errors) - class_errors + len(result.unexpectedSuccesses)
failed = test_failed + class_errors
skipped = len(result.skipped)
passed = result.testsRun - test_failed - skipped
print("integration: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
sys.exit(0 if failed == 0 and result.testsRun > 0 else 1)
