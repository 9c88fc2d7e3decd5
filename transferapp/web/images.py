"""One image: its thumbnail and file, delete and undo, relabel, confirm a doubted label."""

import io

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from PIL import PngImagePlugin

from transferapp.accounts import roles
from transferapp.engine import imaging
from transferapp.library import images as library_images
from transferapp.library import intake, trash
from transferapp.library import selectors as library_selectors
from transferapp.storage import blobs
from transferapp.web import actions, bucket, classes
from transferapp.web import inbox as web_inbox


@login_required
def image_thumbnail(request, pk):
    image = library_selectors.image_get_for_user(user=request.user, need=roles.VIEWER, pk=pk, inbox_too=True)
    field = image.thumbnail or image.file
    return _private_file(field)


@login_required
def image_file(request, pk):
    image = library_selectors.image_get_for_user(user=request.user, need=roles.VIEWER, pk=pk, inbox_too=True)
    if image.file.name.endswith(".dcm"):
        return rendered_png(image.file)
    return _private_file(image.file)


def rendered_png(field, *, tag: str = ""):
    """The picture of a stored file as a freshly encoded PNG: for a DICOM file, whose stored bytes also
    hold the patient's identifying tags, which the browser must never receive; for a reading study's
    image, whose stored bytes would otherwise match the class page's file byte for byte (#26). `tag`,
a PNG text chunk, keeps the bytes apart even where the stored file is itself a PNG that the same encoder
wrote (re-encoding alone would give the very same bytes)."""
    try:
        with field.open("rb") as f, intake.decode_slots():  # a large 16-bit study: bounded like an upload
            rgb = imaging.load_rgb(f.read())
    except FileNotFoundError:
        raise Http404("File missing") from None
    except imaging.DecodeError as exc:
        return HttpResponse(str(exc), status=422, content_type="text/plain")
    out = io.BytesIO()
    info = None
    if tag:
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", tag)
    rgb.save(out, format="PNG", pnginfo=info)
    response = HttpResponse(out.getvalue(), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def _private_file(field):
    """A stored file for its owner (checked by the caller): from the disk, or from the bucket by a
    short-lived presigned redirect (S3_PUBLIC_URL set) or streamed through, never whole in memory."""
    if blobs.s3_mode():
        return bucket.bucket_file(field.name)
    try:
        response = FileResponse(field.open("rb"))
    except FileNotFoundError:
        raise Http404("File missing") from None
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_POST
def image_delete(request, pk):
    image = library_selectors.image_get_for_user(user=request.user, need=roles.LABELLER, pk=pk, inbox_too=True)
    library_images.image_delete(image=image)
    if image.label is None:  # an Inbox image (#24): back to the Inbox, with its undo
        return _inbox_image_deleted(request, image)
    if request.htmx and request.POST.get("card"):  # a card outside the class grid (the suspects gallery)
        return render(request, "transferapp/_image_deleted.html", {"image": image})
    image.label.project = image.project  # the instance that carries the user's role (`can`) for the grid
    classes.offer_undo(request, image.label, [image])
    if request.htmx:  # the grid again: its count and the undo bar change with it
        return classes.label_page(request, image.label, partial=True)
    return redirect(image.label)


def _inbox_image_deleted(request, image):
    web_inbox.offer_undo(request, image.project, [image])
    if request.htmx:
        return web_inbox.render_inbox(request, image.project, partial=True)
    return redirect("inbox_page", pk=image.project_id)


@login_required
@require_POST
def images_restore(request, pk):
    project = library_selectors.project_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    images = library_selectors.deleted_images_in_project(project=project, pks=request.POST.getlist("images"))
    restored, refusal = trash.images_restore(images=images)
    if restored:
        messages.success(request, f"Restored {restored} image{'' if restored == 1 else 's'}.")
    if refusal:
        left = len(images) - restored
        messages.error(request, f"{left} image{'' if left == 1 else 's'} not restored: {refusal}")
    elif not restored:
        messages.error(request, "Those images can no longer be restored.")
    if images and images[0].label is None:  # Inbox images come back to the Inbox page
        return redirect("inbox_page", pk=project.pk)
    return redirect(images[0].label if images else project)


@login_required
@require_POST
def image_relabel(request, pk):
    """One click from the "please look at these first" gallery: move the image to another class."""
    image = library_selectors.image_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    target_pk = request.POST.get("target", "")
    target = library_selectors.label_get_for_user(user=request.user, need=roles.LABELLER, project_pk=image.project_id,
                                          pk=library_selectors.parse_id(target_pk) or 0)
    actions.apply(request, library_images.image_relabel, image=image, label=target)
    if request.htmx:
        return render(request, "transferapp/_suspect_done.html", {"moved_to": target})
    messages.success(request, f"Moved {image.original_name} to “{target.name}”.")
    return actions._back(request, image.label)


@login_required
@require_POST
def image_confirm(request, pk):
    """"Label is right": the image is not listed as a suspect again."""
    image = library_selectors.image_get_for_user(user=request.user, need=roles.LABELLER, pk=pk)
    library_images.image_confirm_label(image=image)
    if request.htmx:
        return render(request, "transferapp/_suspect_done.html", {"moved_to": None})
    messages.success(request, f"{image.original_name}: label kept; it will not be listed again.")
    return actions._back(request, image.label)
