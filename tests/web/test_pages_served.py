"""The pages are served by the service itself, with a strict content security policy."""

from playwright.sync_api import expect


def test_console_and_register_pages_are_served(client):
    for path in ("/console/", "/register"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/console", follow_redirects=False).status_code == 308
    assert client.get("/console/assets/style.css").status_code == 200
    assert client.get("/register/assets/nope.js").status_code == 404


def test_redoc_asks_nothing_of_another_host(live, new_page):
    """Found by a newcomer: /redoc asked cdn.redoc.ly for Redocly's logo, on a network with no
    way out. Its policy now has the browser block that before anything leaves the machine."""
    page = new_page()
    elsewhere: dict[str, str | None] = {}

    def failed(request) -> None:
        elsewhere[request.url] = request.failure

    page.tab.on("requestfailed", failed)
    page.tab.on("requestfinished", lambda request: elsewhere.setdefault(request.url, "answered"))
    page.tab.goto(live.base + "/redoc")
    expect(page.tab.locator("h1").first).to_contain_text("Anjeon", timeout=20_000)
    page.tab.wait_for_timeout(1000)  # the logo comes a moment after the page
    outside = {url: why for url, why in elsewhere.items() if not url.startswith(live.base)}
    outside.pop(next((u for u in outside if u.startswith("blob:")), ""), None)
    assert outside == {"https://cdn.redoc.ly/redoc/logo-mini.svg": "csp"}  # blocked
    blocked = [e for e in page.errors if "cdn.redoc.ly" in e]
    assert len(blocked) == 1
    page.errors.remove(blocked[0])
