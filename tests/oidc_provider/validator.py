from oauth2_provider.oauth2_validators import OAuth2Validator


class ClaimsValidator(OAuth2Validator):
    """Gives the claims a real provider gives: the user's name and a verified e-mail address."""

    def get_additional_claims(self, request):
        return {"preferred_username": request.user.username, "email": request.user.email, "email_verified": True}
