from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from transferapp.accounts.auth import RateLimitedLoginView
from transferapp.web import (
    accounts,
    api_inbox,  # noqa: F401 (registers the Inbox's API routes on api)
    api_study_agreement,  # noqa: F401 (registers the study agreement API route on api)
    api_studies,  # noqa: F401 (registers the reading studies' API routes on api)
    batches,
    classes,
    keys,
    monitoring,
    predict,
    tokens,
    sharing,
)
from transferapp.web import audit_log as web_audit_log
from transferapp.web import heatmaps as web_heatmaps
from transferapp.web import images as web_images
from transferapp.web import imports as web_imports
from transferapp.web import inbox as web_inbox
from transferapp.web import labelling as web_labelling
from transferapp.web import project_map as web_project_map
from transferapp.web import projects as web_projects
from transferapp.web import reports as web_reports
from transferapp.web import reviews as web_reviews
from transferapp.web import runs as web_runs
from transferapp.web import study_agreement as web_study_agreement
from transferapp.web import studies as web_studies
from transferapp.web import versions as web_versions
from transferapp.web import webhooks as web_webhooks
from transferapp.web.api import api

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="project_list"), name="home"),
    path("accounts/signup/", accounts.signup, name="signup"),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Single sign-on (#26): 404 unless OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET are set.
    path("accounts/oidc/start/", accounts.OIDCLoginStart.as_view(), name="oidc_authentication_init"),
    path("accounts/oidc/callback/", accounts.OIDCCallback.as_view(), name="oidc_authentication_callback"),
    path("accounts/tokens/", tokens.token_list, name="token_list"),
    path("accounts/tokens/new/", tokens.token_create, name="token_create"),
    path("accounts/tokens/<int:pk>/revoke/", tokens.token_revoke, name="token_revoke"),
    path("projects/", web_projects.project_list, name="project_list"),
    path("projects/<int:pk>/", web_projects.project_detail, name="project_detail"),
    path("projects/<int:pk>/rename/", web_projects.project_rename, name="project_rename"),
    path("projects/<int:pk>/delete/", web_projects.project_delete, name="project_delete"),
    path("projects/<int:pk>/sharing/", sharing.sharing_page, name="project_sharing"),
    path("projects/<int:pk>/sharing/add/", sharing.sharing_add, name="sharing_add"),
    path("projects/<int:pk>/sharing/<int:member_pk>/role/", sharing.sharing_change, name="sharing_change"),
    path("projects/<int:pk>/sharing/<int:member_pk>/remove/", sharing.sharing_remove, name="sharing_remove"),
    path("projects/<int:pk>/sharing/leave/", sharing.sharing_leave, name="sharing_leave"),
    path("projects/<int:pk>/classes/new/", classes.label_create, name="label_create"),
    path("projects/<int:project_pk>/classes/<int:pk>/", classes.label_detail, name="label_detail"),
    path("projects/<int:project_pk>/classes/<int:pk>/rename/", classes.label_rename, name="label_rename"),
    path("projects/<int:project_pk>/classes/<int:pk>/delete/", classes.label_delete, name="label_delete"),
    path("projects/<int:pk>/near-duplicates/", web_projects.project_near_duplicates, name="project_near_duplicates"),
    path("projects/<int:pk>/image-options/", web_projects.project_image_options, name="project_image_options"),
    path("projects/<int:pk>/class-order/", web_projects.project_class_order, name="project_class_order"),
    path("projects/<int:project_pk>/classes/<int:pk>/upload/", classes.label_upload, name="label_upload"),
    path("projects/<int:project_pk>/classes/<int:pk>/selection/", classes.label_bulk, name="label_bulk"),
    path("projects/<int:pk>/inbox/", web_inbox.inbox_page, name="inbox_page"),
    path("projects/<int:pk>/inbox/upload/", web_inbox.inbox_upload, name="inbox_upload"),
    path("projects/<int:pk>/inbox/selection/", web_inbox.inbox_bulk, name="inbox_bulk"),
    path("projects/<int:pk>/images/restore/", web_images.images_restore, name="images_restore"),
    path("projects/<int:pk>/train/", web_runs.training_start, name="training_start"),
    path("projects/<int:pk>/predict/", predict.predict, name="predict"),
    path("projects/<int:pk>/monitoring/", monitoring.project_monitoring, name="project_monitoring"),
    path("projects/<int:pk>/import/", web_imports.import_create, name="import_create"),
    path("imports/<int:pk>/", web_imports.import_detail, name="import_detail"),
    path("images/<int:pk>/thumbnail/", web_images.image_thumbnail, name="image_thumbnail"),
    path("images/<int:pk>/file/", web_images.image_file, name="image_file"),
    path("images/<int:pk>/delete/", web_images.image_delete, name="image_delete"),
    path("images/<int:pk>/relabel/", web_images.image_relabel, name="image_relabel"),
    path("images/<int:pk>/confirm/", web_images.image_confirm, name="image_confirm"),
    path("runs/<int:pk>/trust/", web_runs.run_trust_settings, name="run_trust_settings"),
    path("runs/<int:pk>/", web_runs.run_detail, name="run_detail"),
    path("runs/<int:pk>/cancel/", web_runs.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/retry/", web_runs.run_retry, name="run_retry"),
    path("runs/<int:pk>/delete/", web_runs.run_delete, name="run_delete"),
    path("runs/<int:pk>/download/", web_runs.run_download, name="run_download"),
    path("healthz", web_projects.healthz, name="healthz"),
    path("projects/<int:pk>/versions/compare/", web_versions.version_compare, name="version_compare"),
    path("runs/<int:pk>/publish/", web_versions.run_publish, name="run_publish"),
    path("runs/<int:pk>/export/", web_versions.run_export, name="run_export"),
    path("runs/<int:pk>/export/download/", web_versions.run_export_download, name="run_export_download"),
    path("runs/<int:pk>/report/", web_reports.run_report, name="run_report"),
    path("runs/<int:pk>/report.pdf", web_reports.run_report_pdf, name="run_report_pdf"),
    path("runs/<int:pk>/report/manifest.csv", web_reports.run_report_manifest, name="run_report_manifest"),
    path("projects/<int:pk>/intended-use/", web_versions.project_intended_use, name="project_intended_use"),
    path("projects/<int:pk>/prediction-log/", web_versions.project_prediction_log, name="project_prediction_log"),
    path("projects/<int:pk>/api-keys/", keys.api_key_create, name="api_key_create"),
    path("api-keys/<int:pk>/revoke/", keys.api_key_revoke, name="api_key_revoke"),
    path("projects/<int:pk>/webhooks/", web_webhooks.webhooks_page, name="webhooks_page"),
    path("projects/<int:pk>/audit/", web_audit_log.audit_log, name="audit_log"),
    path("projects/<int:pk>/audit/log.csv", web_audit_log.audit_log_csv, name="audit_log_csv"),
    path("projects/<int:pk>/webhooks/add/", web_webhooks.webhook_create, name="webhook_create"),
    path("webhooks/<int:pk>/toggle/", web_webhooks.webhook_toggle, name="webhook_toggle"),
    path("webhooks/<int:pk>/delete/", web_webhooks.webhook_delete, name="webhook_delete"),
    path("webhooks/<int:pk>/test/", web_webhooks.webhook_test, name="webhook_test"),
    path("projects/<int:pk>/predict/batch/", batches.predict_batch, name="predict_batch"),
    path("batches/<int:pk>/", batches.batch_detail, name="batch_detail"),
    path("batches/<int:pk>/download/", batches.batch_download, name="batch_download"),
    path("runs/<int:pk>/heatmap/<str:digest>/<int:class_index>.png", web_heatmaps.run_heatmap, name="run_heatmap"),
    path("runs/<int:pk>/images/<int:image_pk>/heatmap/<int:class_index>.png", web_heatmaps.run_image_heatmap,
         name="run_image_heatmap"),
    path("projects/<int:pk>/map/", web_project_map.map_page, name="project_map"),
    path("projects/<int:pk>/map/data/", web_project_map.map_data, name="project_map_data"),
    path("projects/<int:pk>/map/action/", web_project_map.map_action, name="project_map_action"),
    path("projects/<int:pk>/review/", web_reviews.review_queue, name="review_queue"),
    path("projects/<int:pk>/label/", web_labelling.labelling_page, name="labelling_page"),
    path("projects/<int:pk>/label/queue/", web_labelling.labelling_queue, name="labelling_queue"),
    path("projects/<int:pk>/label/act/", web_labelling.labelling_act, name="labelling_act"),
    path("projects/<int:pk>/label/similar/<int:image_pk>/", web_labelling.labelling_similar, name="labelling_similar"),
    path("projects/<int:pk>/review/add-all/", web_reviews.review_add_all, name="review_add_all"),
    path("predictions/<int:pk>/image/", web_reviews.prediction_image, name="prediction_image"),
    path("predictions/<int:pk>/review/", web_reviews.prediction_review, name="prediction_review"),
    path("predictions/<int:pk>/review/undo/", web_reviews.prediction_review_undo, name="prediction_review_undo"),
    path("predictions/<int:pk>/add-to-training/", web_reviews.prediction_add, name="prediction_add"),
    path("runs/<int:pk>/images/<int:image_pk>/similar/", web_heatmaps.run_image_similar, name="run_image_similar"),
    path("studies/<int:sid>/agreement/", web_study_agreement.study_agreement, name="study_agreement"),
    path("studies/<int:sid>/agreement/reads.csv", web_study_agreement.study_agreement_csv, name="study_agreement_csv"),
    path("projects/<int:pk>/studies/", web_studies.study_list, name="study_list"),
    path("projects/<int:pk>/studies/new/", web_studies.study_new, name="study_new"),
    path("studies/<int:sid>/read/", web_studies.study_read, name="study_read"),
    path("studies/<int:sid>/images/<int:item_pk>/file/", web_studies.study_image_file, name="study_image_file"),
    path("studies/<int:sid>/adjudicate/", web_studies.study_adjudicate, name="study_adjudicate"),
    path("studies/<int:sid>/close/", web_studies.study_close, name="study_close"),
    path("studies/<int:sid>/write-back/", web_studies.study_write_back, name="study_write_back"),
    path("api/v1/", api.urls),
]
if settings.ADMIN_ENABLED:
    urlpatterns.append(path("admin/", admin.site.urls))
