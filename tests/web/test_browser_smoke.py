"""The browser harness works: the real service answers a real Chromium."""


def test_the_pages_open_in_chromium(live, new_page):
    page = new_page()
    for path in ("/register", "/console/"):
        response = page.tab.goto(live.base + path)
        assert response.status == 200
        assert page.tab.title().startswith("Anjeon")
