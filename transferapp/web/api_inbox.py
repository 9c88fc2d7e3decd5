"""The Inbox's part of the REST API (#24), on the same /api/v1/ and the same project keys as
web/api.py: upload unlabelled images, ask which to label next, give one its label.

Its routes register on web.api's `api` when this module is imported (transferapp/urls.py imports
it before it mounts api.urls)."""
from transferapp.web.api import _errors, _project_for_key, api  # noqa: F401 (used by the routes below)

# POST /projects/{project_id}/inbox               (files → the upload's per-file report)
# GET  /projects/{project_id}/inbox/next?n=10     ([{"image", "file", "suggestion": {"label", "probability"}, "reason"}])
# POST /projects/{project_id}/images/{image}/label ({"label": NAME} → moves it out of the Inbox; 400 lists the classes)
