"""Sign-in with a limit on failed attempts, counted in the shared cache per account and per address."""
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache


class RateLimitedLoginView(auth_views.LoginView):
    template_name = "transferapp/login.html"

    def post(self, request, *args, **kwargs):
        if any(cache.get(key, 0) >= settings.LOGIN_ATTEMPTS_LIMIT for key in self._keys()):
            form = self.get_form()
            minutes = settings.LOGIN_ATTEMPTS_WINDOW_S // 60
            form.add_error(None, f"Too many failed sign-in attempts. Try again in {minutes} minutes.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        for key in self._keys():
            cache.add(key, 0, timeout=settings.LOGIN_ATTEMPTS_WINDOW_S)
            cache.incr(key)
        return super().form_invalid(form)

    def _keys(self) -> list[str]:
        username = self.request.POST.get("username", "").strip().lower()
        return [f"login-fail:user:{username}", f"login-fail:addr:{self.request.META.get('REMOTE_ADDR', '')}"]
