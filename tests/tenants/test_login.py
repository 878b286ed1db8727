"""The dashboard with auth on: sign in with a key, kept in an HttpOnly SameSite=Strict cookie."""

from app.tenants.auth import KEY_COOKIE


def test_pages_redirect_to_sign_in_and_back(auth_app, alice):
    response = auth_app.get("/models", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fmodels"
    page = auth_app.get("/login?next=/models")
    assert '<label for="key">API key</label>' in page.text and 'value="/models"' in page.text

    refused = auth_app.post("/login", data={"key": "wrong", "next": "/models"}, follow_redirects=False)
    assert refused.status_code == 401
    assert 'role="alert"' in refused.text and "not valid" in refused.text

    signed_in = auth_app.post("/login", data={"key": alice.key, "next": "/models"}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/models"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{KEY_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = auth_app.get("/models")  # the client keeps the cookie, as a browser does
    assert page.status_code == 200 and "Tenant <strong>alice</strong>" in page.text
    assert auth_app.get("/v1/models").status_code == 200  # the page's own API calls carry it too

    auth_app.post("/logout", follow_redirects=False)
    assert auth_app.get("/models", follow_redirects=False).status_code == 303


def test_sign_in_never_redirects_off_the_site(auth_app, alice):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        response = auth_app.post("/login", data={"key": alice.key, "next": target}, follow_redirects=False)
        assert response.headers["location"] == "/", target


def test_without_auth_the_sign_in_page_goes_home(client):  # noqa: F811
    assert client.get("/login", follow_redirects=False).headers["location"] == "/"
