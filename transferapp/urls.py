from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from transferapp import model_views, views
from transferapp.api import api
from transferapp.auth import RateLimitedLoginView

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="project_list"), name="home"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("projects/", views.project_list, name="project_list"),
    path("projects/<int:pk>/", views.project_detail, name="project_detail"),
    path("projects/<int:pk>/rename/", views.project_rename, name="project_rename"),
    path("projects/<int:pk>/delete/", views.project_delete, name="project_delete"),
    path("projects/<int:pk>/classes/new/", views.label_create, name="label_create"),
    path("projects/<int:project_pk>/classes/<int:pk>/", views.label_detail, name="label_detail"),
    path("projects/<int:project_pk>/classes/<int:pk>/rename/", views.label_rename, name="label_rename"),
    path("projects/<int:project_pk>/classes/<int:pk>/delete/", views.label_delete, name="label_delete"),
    path("projects/<int:pk>/image-options/", views.project_image_options, name="project_image_options"),
    path("projects/<int:pk>/class-order/", views.project_class_order, name="project_class_order"),
    path("projects/<int:project_pk>/classes/<int:pk>/upload/", views.label_upload, name="label_upload"),
    path("projects/<int:project_pk>/classes/<int:pk>/selection/", views.label_bulk, name="label_bulk"),
    path("projects/<int:pk>/images/restore/", views.images_restore, name="images_restore"),
    path("projects/<int:pk>/train/", views.training_start, name="training_start"),
    path("projects/<int:pk>/predict/", views.predict, name="predict"),
    path("projects/<int:pk>/import/", views.import_create, name="import_create"),
    path("imports/<int:pk>/", views.import_detail, name="import_detail"),
    path("images/<int:pk>/thumbnail/", views.image_thumbnail, name="image_thumbnail"),
    path("images/<int:pk>/file/", views.image_file, name="image_file"),
    path("images/<int:pk>/delete/", views.image_delete, name="image_delete"),
    path("images/<int:pk>/relabel/", views.image_relabel, name="image_relabel"),
    path("images/<int:pk>/confirm/", views.image_confirm, name="image_confirm"),
    path("runs/<int:pk>/trust/", views.run_trust_settings, name="run_trust_settings"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:pk>/retry/", views.run_retry, name="run_retry"),
    path("runs/<int:pk>/delete/", views.run_delete, name="run_delete"),
    path("runs/<int:pk>/download/", views.run_download, name="run_download"),
    path("healthz", views.healthz, name="healthz"),
    path("projects/<int:pk>/versions/compare/", model_views.version_compare, name="version_compare"),
    path("runs/<int:pk>/publish/", model_views.run_publish, name="run_publish"),
    path("runs/<int:pk>/export/", model_views.run_export, name="run_export"),
    path("runs/<int:pk>/export/download/", model_views.run_export_download, name="run_export_download"),
    path("runs/<int:pk>/report/", model_views.run_report, name="run_report"),
    path("runs/<int:pk>/report.pdf", model_views.run_report_pdf, name="run_report_pdf"),
    path("runs/<int:pk>/report/manifest.csv", model_views.run_report_manifest, name="run_report_manifest"),
    path("projects/<int:pk>/intended-use/", model_views.project_intended_use, name="project_intended_use"),
    path("projects/<int:pk>/api-keys/", model_views.api_key_create, name="api_key_create"),
    path("api-keys/<int:pk>/revoke/", model_views.api_key_revoke, name="api_key_revoke"),
    path("projects/<int:pk>/predict/batch/", model_views.predict_batch, name="predict_batch"),
    path("batches/<int:pk>/", model_views.batch_detail, name="batch_detail"),
    path("batches/<int:pk>/download/", model_views.batch_download, name="batch_download"),
    path("runs/<int:pk>/heatmap/<str:digest>/<int:class_index>.png", model_views.run_heatmap, name="run_heatmap"),
    path("runs/<int:pk>/images/<int:image_pk>/heatmap/<int:class_index>.png", model_views.run_image_heatmap,
         name="run_image_heatmap"),
    path("api/v1/", api.urls),
]
if settings.ADMIN_ENABLED:
    urlpatterns.append(path("admin/", admin.site.urls))
