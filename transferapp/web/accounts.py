"""Sign-up (sign-in is accounts/auth.py's throttled login view)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.http import HttpResponse
from django.shortcuts import redirect, render

from transferapp.accounts import throttle


def signup(request):
    if not settings.ALLOW_SIGNUP:
        return render(request, "transferapp/signup.html", {"closed": True}, status=403)
    refusal = throttle.signup_refusal(request) if request.method == "POST" else ""
    if refusal:
        return HttpResponse(refusal, status=429, content_type="text/plain; charset=utf-8")
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        throttle.signup_counted(request)
        login(request, user)
        messages.success(request, "Welcome! Create your first project to get started.")
        return redirect("project_list")
    return render(request, "transferapp/signup.html", {"form": form})
