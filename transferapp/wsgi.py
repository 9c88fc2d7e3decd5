import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transferapp.settings")
application = get_wsgi_application()

from transferapp.predictions import use_web_threads  # noqa: E402 - needs the settings loaded above

use_web_threads()
