"""Launch `hf-decomp explore` on a results folder, measure its startup, and screenshot it in headless Chromium.

    python scripts/explorer_screenshot.py RUN_DIR OUT_DIR [--image N] [--class NAME]

Prints the seconds from process start to the app answering HTTP (imports, model and results loading,
building the UI), and writes OUT_DIR/explorer_image.png (Image tab after picking image N) and
OUT_DIR/explorer_class.png (Class tab of NAME).
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("out_dir")
    parser.add_argument("--image", type=int, default=7)
    parser.add_argument("--class", dest="class_name", default="cat")
    args = parser.parse_args()

    from hf_decomp.explore.app import launch

    app = launch(args.run_dir, block=False)
    urllib.request.urlopen(app.local_url, timeout=60).read()
    print(f"startup: {time.perf_counter() - START:.1f} s from process start to the app answering at {app.local_url}")

    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tempfile.mkdtemp()}", "--window-size=1400,1250"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(app.local_url)
        wait = WebDriverWait(driver, 300)
        number = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#image-number input")))
        number.clear()
        number.send_keys(str(args.image))
        driver.find_element(By.CSS_SELECTOR, "#explore-image").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#image-message"), "Decomposed prediction"))
        wait.until(lambda d: d.execute_script(
            "const i = document.querySelector('#activation-maps img'); return i && i.complete && i.naturalWidth > 0;"))
        time.sleep(1)
        driver.save_screenshot(str(out / "explorer_image.png"))
        driver.find_element(By.XPATH, "//button[@role='tab' and normalize-space()='Class']").click()
        choice = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#class-choice input")))
        from selenium.webdriver.common.keys import Keys

        choice.click()
        choice.send_keys(Keys.CONTROL, "a")
        choice.send_keys(args.class_name)
        time.sleep(0.5)
        choice.send_keys(Keys.ENTER)
        driver.find_element(By.CSS_SELECTOR, "#show-class").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#class-message"), args.class_name))
        wait.until(lambda d: d.execute_script("return document.querySelectorAll('#class-strips img').length > 0;"))
        time.sleep(2)
        driver.save_screenshot(str(out / "explorer_class.png"))
    finally:
        driver.quit()
        app.close()
    print(f"screenshots in {out}/")


if __name__ == "__main__":
    main()
