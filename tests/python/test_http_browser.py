"""The viewer at / in a real browser (headless Chromium through Selenium): it shows the fractal in
the palette's colours, zooms with the keyboard and the mouse wheel and loads the new tiles,
reloads the same view from its URL, and the Mandelbrot-to-Julia picker works. The screenshot is
saved in the test's output folder. Skipped, saying why, where Chromium cannot start."""
import os
import re
import tempfile
import time
import unittest
import zlib

import fractald_harness as h
from test_http import FAST, HttpServer

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    SELENIUM_ERROR = None
except ImportError as e:  # python3-selenium missing
    SELENIUM_ERROR = str(e)

OUTPUT = os.environ.get("FRACTAL_TEST_OUTPUT_DIR") or tempfile.gettempdir()
WIDTH, HEIGHT = 1100, 700   # the window; the map is the window less the 300-px panel


def rgb_pixels(png):
    """Rows of (r, g, b) tuples of an 8-bit RGB or RGBA PNG (what Chromium's screenshots are)."""
    width, height, depth, ctype, _, raw = h.png_info(png)
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    stride, rows, prev, pos = width * bpp, [], bytearray(width * bpp), 0
    for _ in range(height):
        ftype, line = raw[pos], bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[i:i + 3]) for i in range(0, stride, bpp)])
        prev = line
    return rows


@unittest.skipIf(SELENIUM_ERROR, "python3-selenium is not installed: %s" % SELENIUM_ERROR)
class BrowserTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = HttpServer(*FAST)
        opts = Options()
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=%d,%d" % (WIDTH, HEIGHT), "--force-device-scale-factor=1",
                    "--user-data-dir=" + tempfile.mkdtemp(prefix="fractald-chromium-")):
            opts.add_argument(arg)
        opts.binary_location = "/usr/bin/chromium"
        try:
            cls.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        except Exception as e:  # no Chromium, no display libraries, a sandbox refusal...
            cls.server.stop()
            raise unittest.SkipTest("headless Chromium cannot start here: %s" % str(e).splitlines()[0])
        cls.driver.set_script_timeout(30)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        assert cls.server.stop() == 0

    def js(self, script):
        return self.driver.execute_script("return " + script)

    def wait(self, cond, what, timeout=30):
        deadline = time.monotonic() + timeout
        while not self.js(cond):
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s; status: %s" % (what, self.js(
                    "document.getElementById('status').textContent")))
            time.sleep(0.05)

    def wait_tiles_of_zoom(self, z, n=2):
        self.wait("fractalViewer.loadedUrls.filter(u => u.startsWith('v1/tiles/%d/')).length >= %d" % (z, n),
                  "tiles of zoom %d" % z)
        self.wait("document.querySelectorAll('#map img.leaflet-tile:not(.leaflet-tile-loaded)').length == 0",
                  "every tile loaded")

    def open(self, fragment):
        # A fresh page: a URL that differs only in its hash would just change the hash.
        self.driver.get("about:blank")
        self.driver.get("http://127.0.0.1:%d/#%s" % (self.server.http_port, fragment))
        self.wait("window.fractalViewer && fractalViewer.tilesLoaded() >= 4", "the first tiles")
        self.wait("document.querySelectorAll('#map img.leaflet-tile:not(.leaflet-tile-loaded)').length == 0",
                  "every tile loaded")

    def map_pixels(self):
        png = self.driver.get_screenshot_as_png()
        rows = rgb_pixels(png)
        size = self.js("[fractalViewer.map().getSize().x, fractalViewer.map().getSize().y]")
        return png, [row[:size[0]] for row in rows[:size[1]]]

    def test_viewer(self):
        self.open("fractal=julia&c=-0.8,0.156&center=0,0&w=4&palette=viridis")
        png, pixels = self.map_pixels()
        shot = os.path.join(OUTPUT, "http_viewer.png")
        os.makedirs(OUTPUT, exist_ok=True)
        with open(shot, "wb") as f:
            f.write(png)
        print("screenshot: %s" % shot)
        # The fractal, not a blank map: many colours, and (tiles drawn 1:1) every one of them a
        # colour the server's own tiles of this view have.
        colours = {}
        for row in pixels[::4]:
            for p in row[::4]:
                colours[p] = colours.get(p, 0) + 1
        self.assertGreater(len(colours), 50, "the map shows few colours")
        palette = set()
        url = self.js("fractalViewer.loadedUrls[0]")
        for x in range(-2, 3):
            for y in range(-2, 3):
                tile = re.sub(r"^v1/tiles/0/-?\d+/-?\d+\.png", "v1/tiles/0/%d/%d.png" % (x, y), url)
                st, _, body = self.server.request("GET", "/" + tile)
                self.assertEqual(st, 200, body[:200])
                palette.update(p for row in h.png_pixels(body) for p in
                               (tuple(row[i:i + 3]) for i in range(0, len(row), 3)))
        inside = sum(n for c, n in colours.items() if c in palette)
        self.assertGreater(inside / sum(colours.values()), 0.97, "colours outside the palette's tiles")

        # Zoom in with the keyboard, then with the wheel: the map asks for and shows new tiles.
        self.driver.find_element(By.ID, "map").click()
        # "=" is the "+" key without shift (shift makes Leaflet zoom by 3).
        self.driver.find_element(By.ID, "map").send_keys("=")
        self.wait("fractalViewer.map().getZoom() == 1", "keyboard zoom")
        self.wait_tiles_of_zoom(1)
        ActionChains(self.driver).scroll_from_origin(ScrollOrigin.from_element(
            self.driver.find_element(By.ID, "map")), 0, -300).perform()
        self.wait("fractalViewer.map().getZoom() >= 2", "wheel zoom")
        z = self.js("fractalViewer.map().getZoom()")
        self.wait_tiles_of_zoom(z)
        time.sleep(0.3)  # the hash follows moveend

        # The URL holds the view: opening it again shows the same place at the same scale.
        view = self.js("fractalViewer.currentView()")
        url = self.driver.current_url
        self.assertIn("w=", url)
        _, before = self.map_pixels()
        self.driver.get("about:blank")
        self.driver.get(url)
        self.wait("window.fractalViewer && fractalViewer.tilesLoaded() >= 4", "tiles after the reload")
        self.wait("document.querySelectorAll('#map img.leaflet-tile:not(.leaflet-tile-loaded)').length == 0",
                  "every tile loaded")
        again = self.js("fractalViewer.currentView()")
        for k in ("re", "im", "w"):
            self.assertAlmostEqual(again[k], view[k], delta=abs(view["w"]) * 1e-9, msg=k)
        _, after = self.map_pixels()
        same = sum(1 for r0, r1 in zip(before[::3], after[::3]) for a, b in zip(r0[::3], r1[::3])
                   if max(abs(a[0] - b[0]), abs(a[1] - b[1]), abs(a[2] - b[2])) <= 24)
        total = sum(len(r[::3]) for r in before[::3])
        self.assertGreater(same / total, 0.8, "the reloaded view looks different")

        # Deep: past the re-anchoring zoom the base view moves to the map's centre and the map
        # starts again at zoom 0, with the tile width carried over exactly.
        before = self.js("fractalViewer.currentView()")
        self.driver.execute_script("fractalViewer.map().setZoom(10)")
        self.wait("fractalViewer.map().getZoom() == 0 && fractalViewer.state.base.w < %r" % before["w"], "re-anchoring")
        deep = self.js("fractalViewer.currentView()")
        self.assertEqual(deep["w"], before["w"] / 2 ** (10 - before["zoom"]))
        self.assertAlmostEqual(deep["re"], before["re"], delta=before["w"] * 1e-6)
        self.wait_tiles_of_zoom(0, 4)

        # Download at size: a job over REST, its progress, then the image.
        self.driver.find_element(By.ID, "dl_w").clear()
        self.driver.find_element(By.ID, "dl_w").send_keys("320")
        self.driver.find_element(By.ID, "dl_h").clear()
        self.driver.find_element(By.ID, "dl_h").send_keys("200")
        self.driver.find_element(By.ID, "dl_go").click()
        self.wait("document.getElementById('dl_link') !== null", "the downloaded job result")
        self.assertIn("fractal-320x200.png", self.driver.find_element(By.ID, "dl_link").text)
        jobs = self.server.get_json("/v1/jobs")["jobs"]
        self.assertEqual((jobs[0]["state"], jobs[0]["width"], jobs[0]["height"]), ("JOB_STATE_SUCCEEDED", 320, 200))

    def test_picker(self):
        self.open("fractal=mandelbrot&center=-0.5,0&w=3&palette=inferno")
        self.assertEqual(self.js("fractalViewer.state.fractal"), "mandelbrot")
        # Click left of the map's centre: c is about -0.5 - (120 / 256) * 3 on the real axis.
        ActionChains(self.driver).move_to_element_with_offset(self.driver.find_element(By.ID, "map"), -120, 0) \
            .click().perform()
        self.wait("!document.getElementById('pick_img').hidden && document.getElementById('pick_img').naturalWidth == 256",
                  "the picker's Julia preview")
        text = self.driver.find_element(By.ID, "pick_c").text
        self.assertTrue(text.startswith("c = -1.906"), text)
        self.driver.find_element(By.ID, "pick_go").click()
        self.wait("fractalViewer.state.fractal == 'julia'", "the switch to Julia")
        c_re = self.js("fractalViewer.state.c_re")
        self.assertAlmostEqual(c_re, -0.5 - 120 / 256 * 3, delta=0.02)
        self.wait_tiles_of_zoom(0, 4)
        self.assertIn("fractal=julia", self.driver.current_url)
        self.assertIn("c_re=%s" % repr(c_re).replace("e-", "e-"), self.js("fractalViewer.loadedUrls.slice(-1)[0]"))
        self.assertEqual(Select(self.driver.find_element(By.ID, "fractal")).first_selected_option.text, "Julia")


if __name__ == "__main__":
    unittest.main()
