"""An operator in a real browser: log in to the admin, see the picture of the
last 24 hours and the entries with a thumbnail that loaded, take a
screenshot, and purge one entry.

Run by tests/browser/test_admin_browser.py with `.venv-tools/bin/python`:
Playwright needs a newer typing-extensions than kentik-api allows in the
service's venv. It drives Debian's Chromium (/usr/bin/chromium); Playwright
downloads no browser.

    admin_flow.py BASE_URL USER PASSWORD ENTRY_ID SCREENSHOT

Exits 0 once every step passed; otherwise says which step failed.
"""

import sys
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# Headless in a container, as root, with no network of its own to reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def log_in(page: Page, base_url: str, user: str, password: str) -> None:
    page.goto(f"{base_url}/admin/")
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(user)


def see_the_entry(page: Page, base_url: str, entry_id: str, screenshot: Path) -> None:
    page.goto(f"{base_url}/admin/imagecache/entry/")
    expect(page.locator("#cache-glance")).to_contain_text("Task queue: tasks, failures")
    see_the_last_day(page)
    thumbnail = page.locator(f'tr:has(input[value="{entry_id}"]) img')
    thumbnail.scroll_into_view_if_needed()
    # decode() settles once the image has loaded and decoded, and fails if it cannot.
    width = thumbnail.evaluate("img => img.decode().then(() => img.naturalWidth)")
    if not width:
        raise SystemExit(f"the thumbnail of {entry_id} did not load")
    # Scrolling the thumbnail into view may have scrolled the list sideways.
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#changelist .results").evaluate("el => { el.scrollLeft = 0; }")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)


def see_the_last_day(page: Page) -> None:
    """The picture of the last 24 hours: drawn, an hour a column, with bars;
    its summary printed for the test to check against the calls it made."""
    chart = page.locator("#cache-activity svg")
    expect(chart).to_be_visible()
    expect(chart.locator("g.activity-hour")).to_have_count(24)
    bars = chart.locator("rect.activity-calls")
    if not bars.count() or not max(
        float(h or 0)
        for h in bars.evaluate_all("rects => rects.map(r => r.getBoundingClientRect().height)")
    ):
        raise SystemExit("the chart of the last 24 hours has no bar")
    print(f"chart: {chart.get_attribute('aria-label')}")


def purge(page: Page, entry_id: str) -> None:
    page.check(f'input.action-select[value="{entry_id}"]')
    page.select_option("select[name=action]", "purge")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_contain_text("Purged 1 entry")
    expect(page.locator(f'input.action-select[value="{entry_id}"]')).to_have_count(0)


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    base_url, user, password, entry_id, screenshot = argv[1:]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            # The navigation sidebar folded, as an operator may keep it: room for the list.
            page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
            page.set_default_timeout(20_000)
            log_in(page, base_url, user, password)
            see_the_entry(page, base_url, entry_id, Path(screenshot))
            purge(page, entry_id)
        finally:
            browser.close()
    print(f"purged {entry_id} in the browser; screenshot at {screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
