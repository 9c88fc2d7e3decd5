from django.conf import settings


def site(request):
    return {"signup_open": settings.ALLOW_SIGNUP, "oidc_enabled": settings.OIDC_ENABLED,
            "oidc_provider_name": settings.OIDC_PROVIDER_NAME}
