import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "transferapp.settings")
application = get_wsgi_application()

from transferapp.serving.predictions import use_web_threads

use_web_threads()
