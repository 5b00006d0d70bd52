"""Headless Debian chromium driven by selenium, waiting for Streamlit's elements rather than for time."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

T = TypeVar("T")
APT_PACKAGES = ["chromium", "chromium-driver"]


def find_browser() -> tuple[str, str] | str:
    """``(chromium, chromedriver)`` paths, installing Debian's packages when missing; else why not (a str)."""
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if all(found):
        return found[0] or "", found[1] or ""
    if not shutil.which("apt-get"):
        return "chromium/chromedriver are not installed and there is no apt-get to install them"
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *APT_PACKAGES],
            check=True,
            capture_output=True,
            timeout=600,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"chromium/chromedriver missing and 'apt-get install -y {' '.join(APT_PACKAGES)}' failed: {exc}"
    found = shutil.which("chromium"), shutil.which("chromedriver")
    if not all(found):
        return "apt-get installed chromium-driver but chromium or chromedriver is still not on PATH"
    return found[0] or "", found[1] or ""


def start_chromium(chromium: str, chromedriver: str, downloads: Path) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


class Page:
    """One browser tab on the web app, with waits for what Streamlit draws."""

    def __init__(self, driver: webdriver.Chrome, shots: Path) -> None:
        self.driver, self.shots = driver, shots

    def wait(self, what: str, check: Callable[[], T | None], timeout: float = 60.0) -> T:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = check()
                if value:
                    return value
            except (StaleElementReferenceException, WebDriverException):
                pass
            if time.monotonic() > deadline:
                self.screenshot(f"timeout-{what.replace(' ', '-')[:40]}")
                raise AssertionError(
                    f"timed out after {timeout:.0f} s waiting for {what}; page text:\n{self.text()[-2000:]}"
                )
            time.sleep(0.3)

    def open(self, url: str) -> None:
        self.driver.get(url)
        self.wait("the app to render", lambda: self.all('[data-testid="stApp"]') and not self.running(), 90)

    def go_to(self, title: str) -> None:
        """Another page of the app through the sidebar, in the same session (a reload would start a new one)."""
        link = self.wait(
            f"the {title!r} link",
            lambda: next(
                (a for a in self.all('a[data-testid="stSidebarNavLink"]') if a.text.strip().endswith(title)), None
            ),
        )
        link.click()
        self.wait(f"the {title} page", lambda: any(h.text.strip() == title for h in self.all("h1")))
        self.settle()

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self) -> str:
        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def running(self) -> bool:
        """Whether Streamlit is still running the script (its status widget shows)."""
        return bool(self.all('[data-testid="stStatusWidget"]'))

    def settle(self, timeout: float = 120.0) -> None:
        time.sleep(0.5)
        self.wait("the script run to finish", lambda: not self.running(), timeout)

    def button(self, label: str, timeout: float = 60.0) -> WebElement:
        def find() -> WebElement | None:
            for element in self.all("button"):
                if element.text.strip() == label and element.is_displayed() and element.is_enabled():
                    return element
            return None

        return self.wait(f"button {label!r}", find, timeout)

    def click(self, label: str, timeout: float = 60.0) -> None:
        element = self.button(label, timeout)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()
        self.settle()

    def type_into(self, aria_label: str, text: str) -> None:
        field = self.wait(f"field {aria_label!r}", lambda: self.all(f'input[aria-label="{aria_label}"]'))[0]
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", field)
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(text, Keys.TAB)

    def choose(self, aria_label: str, option: str) -> None:
        """Pick ``option`` in the selectbox labelled ``aria_label``."""
        box = self.wait(f"select {aria_label!r}", lambda: self.all(f'input[aria-label^="{aria_label}"]'))[0]
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", box)
        box.click()
        item = self.wait(
            f"option {option!r}",
            lambda: next((li for li in self.all('[role="option"]') if li.text.strip().startswith(option)), None),
        )
        item.click()
        self.settle()

    def expand(self, title: str) -> None:
        summary = self.wait(
            f"expander {title!r}",
            lambda: next((s for s in self.all("summary") if s.text.strip().endswith(title)), None),
        )
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", summary)
        summary.click()
        time.sleep(0.3)

    def upload(self, paths: list[Path]) -> None:
        field = self.wait("a file input", lambda: self.all('input[type="file"]'))[0]
        field.send_keys("\n".join(str(p) for p in paths))
        self.wait(  # each uploaded file is listed with its size
            "the uploads to be listed",
            lambda: len(re.findall(r"\d(?:\.\d)?\s?[KMG]?B$", self.text(), re.M)) >= len(paths),
        )

    def screenshot(self, name: str) -> Path:
        """A full-page PNG under the screenshots folder (the window grown to the page's height)."""
        height = self.driver.execute_script(
            "return Math.max(document.body.scrollHeight, "
            "...Array.from(document.querySelectorAll('section, [data-testid=stMain]')).map(e => e.scrollHeight))"
        )
        self.driver.set_window_size(1400, max(900, min(int(height) + 200, 6000)))
        time.sleep(0.5)
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1400, 1600)
        return path
