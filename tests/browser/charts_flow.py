"""Saved charts in a real browser: the chart page (its image loaded, its
snippets), then, as an operator, the admin's chart list with a thumbnail
that loaded; a screenshot of each.

Run by tests/browser/test_charts_browser.py as
`python -m tests.browser.charts_flow` from the checkout:

    charts_flow BASE_URL USER PASSWORD SLUG PAGE_SCREENSHOT ADMIN_SCREENSHOT

Exits 0 once every step passed; otherwise says which step failed.
"""

import sys
from pathlib import Path

from playwright.sync_api import Locator, Page, expect, sync_playwright

from tests.browser.admin_flow import CHROMIUM, CHROMIUM_ARGS, log_in


def image_width(image: Locator) -> int:
    """The natural width of an <img> once loaded; 0 if it could not load."""
    image.scroll_into_view_if_needed()
    # decode() settles once the image has loaded and decoded, and fails if it cannot.
    return int(image.evaluate("img => img.decode().then(() => img.naturalWidth)") or 0)


def see_the_page(page: Page, base_url: str, slug: str, screenshot: Path) -> None:
    page.goto(f"{base_url}/charts/{slug}")
    expect(page.locator("#snippets")).to_contain_text("Confluence wiki markup")
    if not image_width(page.locator("#chart-image")):
        raise SystemExit(f"the image of {slug} did not load on its page")
    page.reload()  # now "rendered at" shows the render
    expect(page.locator("time#rendered-at")).to_have_count(1)
    page.evaluate("window.scrollTo(0, 0)")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"page: {page.locator('#chart-title').inner_text()}")


def see_the_list(page: Page, base_url: str, slug: str, screenshot: Path) -> None:
    page.goto(f"{base_url}/admin/imagecache/chart/")
    thumbnail = page.locator(f'tr:has(a[href="/charts/{slug}"]) img')
    if not image_width(thumbnail):
        raise SystemExit(f"the thumbnail of {slug} did not load in the admin")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"admin: {page.locator('#result_list tbody tr').count()} charts")


def main(argv: list[str]) -> int:
    if len(argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    base_url, user, password, slug, page_shot, admin_shot = argv[1:]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
            page.set_default_timeout(30_000)
            see_the_page(page, base_url, slug, Path(page_shot))
            log_in(page, base_url, user, password)
            see_the_list(page, base_url, slug, Path(admin_shot))
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
