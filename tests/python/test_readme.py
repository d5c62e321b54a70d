"""Runs the README's Python example against a real fractald, so the documented example keeps
working."""
import os
import re
import subprocess
import sys
import tempfile
import unittest

import fractald_harness as h


class ReadmeTests(unittest.TestCase):
    def test_python_example_renders_a_png(self):
        readme = open(os.path.join(os.environ["FRACTAL_SOURCE_DIR"], "README.md")).read()
        blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
        self.assertEqual(len(blocks), 1, "README should have exactly one Python example")
        server = h.Server()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                env = dict(os.environ, FRACTAL_SERVER=server.target, PYTHONPATH=h.GEN)
                proc = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp, env=env,
                                      capture_output=True, text=True, timeout=120)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                self.assertRegex(proc.stdout, r"^800 600 1 ")
                data = open(os.path.join(tmp, "julia-from-python.png"), "rb").read()
                self.assertEqual(h.png_info(data)[:4], (800, 600, 8, 2))
        finally:
            self.assertEqual(server.stop(), 0)


if __name__ == "__main__":
    unittest.main()
