"""Prepares the provider's database: `python -m tests.oidc_provider.setup REDIRECT_URI CLIENT_ID SECRET`
migrates, adds the user carol and registers our app as a confidential RS256 client whose consent
is skipped (a company's provider would have it pre-approved too)."""
import sys

import django


def main(redirect_uri: str, client_id: str, client_secret: str) -> None:
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from oauth2_provider.models import get_application_model

    call_command("migrate", verbosity=0)
    get_user_model().objects.create_user("carol", email="carol@example.org", password="carol-provider-pw-9")
    get_application_model().objects.create(
        name="transferapp", client_id=client_id, client_secret=client_secret,
        client_type="confidential", authorization_grant_type="authorization-code",
        redirect_uris=redirect_uri, algorithm="RS256", skip_authorization=True,
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
