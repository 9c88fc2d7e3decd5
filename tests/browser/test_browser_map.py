"""In a real Chromium (#24 item 7): the project map draws 20,000 points on its canvas (synthetic
coordinates, as the issue allows, over real image rows: a few real files, the rest rows sharing one
file), shows a thumbnail on hover, and a box drawn with the mouse labels the Inbox images inside it."""
import numpy as np

from tests.browser.test_browser_csp import RECORD_VIOLATIONS
from tests.browser_support import BROWSER_MARKS, expect, sign_in
from tests.factories import inbox_with_images, project_with_images
from transferapp.labelling import project_map
from transferapp.models import Image, ProjectMap

pytestmark = BROWSER_MARKS

POINTS = 20_000
CORNER = 0.85  # only the chosen Inbox images lie above and right of this, on the map's top right
CHOSEN = 30
PAD = 12  # map.js's margin around the points, in CSS pixels


def _project_of_20000(user):
    project = project_with_images(user, per_class=2)
    (real,) = inbox_with_images(project, colors=("red",), per_color=1)
    rows = [Image(project=project, label=None, file=real.file.name, thumbnail=real.thumbnail.name, sha256=f"{i:064x}",
                  original_name=f"synthetic-{i}.png", width=64, height=64) for i in range(POINTS - 5)]
    Image.all_objects.bulk_create(rows, batch_size=2000)
    ids = list(Image.all_objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
    assert len(ids) == POINTS
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, size=(POINTS, 2))
    outside = (xy[:, 0] > CORNER - 0.05) & (xy[:, 1] > CORNER - 0.05)
    xy[outside] *= 0.7  # nothing else near the corner, so a box around it holds only the chosen
    inbox_ids = set(Image.inbox.filter(project=project).values_list("pk", flat=True))
    chosen = [i for i, pk in enumerate(ids) if pk in inbox_ids][-CHOSEN:]
    xy[chosen] = rng.uniform(CORNER + 0.02, 0.98, size=(CHOSEN, 2))
    digest = project_map.images_digest(project)
    ProjectMap.objects.create(project=project, status=ProjectMap.Status.READY, n_points=POINTS, seconds=1.0,
                              images_digest=digest, points_file=project_map.store_points(project, ids, xy, digest))
    return project, [ids[i] for i in chosen]


def test_the_map_draws_20000_points_and_a_box_select_labels_the_inbox_images_in_it(
        live_server, queue, user, screenshots, watched_page):
    project, chosen = _project_of_20000(user)
    page = watched_page
    page.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, live_server.url, "alice", "a-long-password-1")
    page.goto(f"{live_server.url}{project.get_absolute_url()}")
    page.get_by_role("link", name="Map").click()
    canvas = page.locator("#map-canvas")
    expect(canvas).to_have_attribute("data-points", str(POINTS))
    drawn = page.evaluate("""() => { const c = document.getElementById('map-canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }""")
    assert drawn > 50_000, drawn  # 20,000 dots of 4x4 CSS pixels, overlapping: far more than a blank canvas
    # Drawing all 20,000 dots happens once a layout (tens of ms); a frame only copies that layer and
    # draws the selection on top. Bounds loose enough for software rendering on 2 shared cores.
    assert float(canvas.get_attribute("data-layer-ms")) < 1000
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(box["x"] + box["width"] / 2 + 3, box["y"] + box["height"] / 2 + 2)
    expect(page.locator("#map-hover")).to_be_visible()
    assert "/thumbnail/" in page.locator("#map-hover").get_attribute("src")
    screenshots(page, "map-20000")

    def at(x, y):  # map coordinates to the page's pixels, as map.js places them
        return (box["x"] + PAD + x * (box["width"] - 2 * PAD), box["y"] + PAD + (1 - y) * (box["height"] - 2 * PAD))

    page.mouse.move(*at(CORNER, 0.995))
    page.mouse.down()
    for step in range(1, 6):  # a real drag: several moves, each a frame
        page.mouse.move(*at(CORNER + step * (0.995 - CORNER) / 5, 0.995 - step * (0.995 - CORNER) / 5))
    page.mouse.up()
    expect(page.locator("#map-selected")).to_have_text(f"{CHOSEN} selected ({CHOSEN} from the Inbox).")
    print("map layer ms", canvas.get_attribute("data-layer-ms"), "frame ms while dragging", canvas.get_attribute("data-frame-ms"))
    assert float(canvas.get_attribute("data-frame-ms")) < 100
    page.locator("#map-target").select_option(label="blue")
    page.locator("[data-map-action=label]").click()
    expect(page.locator("#map-message")).to_have_text(f"{CHOSEN} Inbox image(s) labelled and 0 moved to “blue”.")
    labelled = Image.objects.filter(pk__in=chosen, label__name="blue")
    assert labelled.count() == CHOSEN and Image.inbox.filter(project=project).count() == POINTS - 4 - CHOSEN
    assert not page.problems and not page.evaluate("window.__cspViolations || []")
