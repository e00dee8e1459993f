"""The pages are served by the service itself, with a strict content security policy."""


def test_console_and_register_pages_are_served(client):
    for path in ("/console/", "/register"):
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/console", follow_redirects=False).status_code == 308
    assert client.get("/console/assets/style.css").status_code == 200
    assert client.get("/register/assets/nope.js").status_code == 404
