"""Sign-in with a limit on failed attempts, counted in the shared cache per (account, address).

Per pair, not per address alone: behind a proxy every user shares one address, and one person's
typos must not lock everybody out. Guessing one account's password from one address is capped.
"""
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache


class RateLimitedLoginView(auth_views.LoginView):
    template_name = "transferapp/login.html"

    def post(self, request, *args, **kwargs):
        if cache.get(self._key(), 0) >= settings.LOGIN_ATTEMPTS_LIMIT:
            form = self.get_form()
            minutes = settings.LOGIN_ATTEMPTS_WINDOW_S // 60
            form.add_error(None, f"Too many failed sign-in attempts. Try again in {minutes} minutes.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        key = self._key()
        cache.add(key, 0, timeout=settings.LOGIN_ATTEMPTS_WINDOW_S)
        cache.incr(key)
        return super().form_invalid(form)

    def _key(self) -> str:
        username = self.request.POST.get("username", "").strip().lower()
        return f"login-fail:{username}:{self.request.META.get('REMOTE_ADDR', '')}"
