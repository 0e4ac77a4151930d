"""The nightly report, built from the real service's catalog and opened in a real browser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from biaswatch.testing.fits import write_cryo_raw
from biaswatch.testing.helpers import run_cli, wait_until, write_config
from biaswatch.testing.service import running_service

# Three nights of good masters (2030-01-10 to -12; 03:00 UTC is the evening before in
# Chicago), and a light leak among the last night's frames.
NIGHTS = {"2030-01-11": "2030-01-10", "2030-01-12": "2030-01-11", "2030-01-13": "2030-01-12"}


def headless_chromium() -> object:
    """A Selenium driver for Debian's chromium; skip where it is not installed."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("chromium and chromium-driver (Debian packages) are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,2400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=driver)
    return webdriver.Chrome(options=options, service=service)


def test_report_loads_without_errors_and_its_images_render(tmp_path: Path) -> None:
    """The night's page shows masters, previews, rejections and trends; the browser agrees."""
    browser = headless_chromium()
    config = write_config(tmp_path, expected_frames=4, settle_seconds=0.2)
    incoming = tmp_path / "incoming" / "cryo"
    with running_service(config) as service:
        for count, day in enumerate(NIGHTS, start=1):
            for i in range(4):
                leak = 40.0 if (day == "2030-01-13" and i == 3) else 0.0
                date = f"{day}T03:00:0{i}"
                seed = count * 10 + i
                write_cryo_raw(incoming / f"{day}_{i}.fits", seed, image_offset=leak, date_obs=date)
            published = service.wait_event("master.published", count=count, timeout=120)
        preview = Path(published[-1]["path"]).with_suffix(".png")
        wait_until(preview.exists, 60, "the last master's preview")
        assert service.stop()[0] == 0
    report = tmp_path / "report.html"
    run_cli("report", "--config", config, "--night", "2030-01-12", "-o", report, check=True)
    page = report.read_text()
    assert "<h2>Camera cryo</h2>" in page and "<h2>Camera te</h2>" in page
    assert "2030-01-13_3.fits" in page and "robust sigma from the set" in page
    assert "bias_cryo_2030-01-12_01_56x40-1x1.fits" in page
    assert page.count("data:image/png;base64,") == 2  # cryo: its preview, its trend plot
    assert "No master this night." in page  # te took no biases
    try:
        browser.get(report.as_uri())  # type: ignore[attr-defined]
        images = browser.execute_script(  # type: ignore[attr-defined]
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth]);"
        )
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]  # type: ignore[attr-defined]
        browser.save_screenshot(str(tmp_path / "report-screenshot.png"))  # type: ignore[attr-defined]
    finally:
        browser.quit()  # type: ignore[attr-defined]
    assert errors == []
    assert len(images) == 2
    assert all(complete and width > 0 for _, complete, width in images), images
    assert (tmp_path / "report-screenshot.png").stat().st_size > 10_000
