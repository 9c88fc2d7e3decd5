"""A tiny OpenID Connect provider (django-oauth-toolkit) that tests/accounts/test_oidc.py runs in a
second process, so that single sign-on is tested against a real provider, not a mock."""
