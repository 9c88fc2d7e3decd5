"""Real Chromium (#26): the user menu's API tokens page: create a token, copy it (the Copy button's
script runs under the CSP), use it, revoke it."""
from tests.browser_support import BROWSER_MARKS, expect, sign_in
from tests.factories import project_with_images
from transferapp.models import ApiKey, PersonalToken

pytestmark = BROWSER_MARKS

USER_PASSWORD = "a-long-password-1"  # tests/conftest.py's `user`


def test_a_user_makes_copies_uses_and_revokes_a_personal_token(live_server, user, screenshots, watched_page):
    project = project_with_images(user, per_class=1)
    page = watched_page
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    sign_in(page, live_server.url, user.username, USER_PASSWORD)

    page.locator("#api-tokens-link").click()
    page.locator("#api-tokens input[name=name]").fill("notebook")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-api-token").inner_text().strip()
    assert PersonalToken.objects.get(user=user).key_hash == ApiKey.hash_of(secret)  # stored hashed
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    screenshots(page, "token-created")

    answer = page.request.get(f"{live_server.url}/api/v1/projects", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status == 200 and [p["id"] for p in answer.json()] == [project.pk]

    page.goto(f"{live_server.url}/accounts/tokens/")
    expect(page.locator("#token-list")).not_to_contain_text(secret)
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("#token-list")).to_contain_text("revoked")
    answer = page.request.get(f"{live_server.url}/api/v1/projects", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status == 401
    assert not page.problems, page.problems
