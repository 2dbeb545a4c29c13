"""Synthetic people: COCO-17 annotated images of drawn human figures, deterministic by seed.

Each figure is a front-facing body (the person's left side on the image right, as a person
facing the camera) made of filled shapes: a skin-coloured head with eyes, nose and ears, a
torso polygon, thick rounded limbs, hands and feet, each outlined in a darker shade. Scale,
joint angles, colours, backgrounds (smooth noise, clutter, pixel noise) and occluders vary.
Ground truth comes from the renderer itself: COCO ``v`` = 2 where the joint's pixel shows
this person, 1 where another person or an occluder covers it, 0 outside the image (stored as
0, 0, 0 like unlabelled COCO keypoints). ``bbox`` is the extent of the whole figure inside the
image and ``area`` its pixel count.

Uses: ``make_dataset`` (tests, tiny CPU training), ``render_sequence`` (random walkers) and
``render_depth_sequence`` (a scripted scene with a pinhole camera, aligned depth and 3D ground
truth: the demo bags).
"""
import json
import math
import os

import cv2
import numpy as np

from rtmo_ros.engine.skeleton import COCO17

# Body proportions as fractions of the figure height (head top to ankles), roughly
# anthropometric; each figure jitters them.
PROPORTIONS = {'head_r': 0.065, 'neck': 0.105, 'torso': 0.30, 'shoulder': 0.11, 'hip': 0.075,
               'upper_arm': 0.165, 'forearm': 0.15, 'thigh': 0.235, 'shin': 0.225,
               'arm_w': 0.045, 'leg_w': 0.06}
SKIN_TONES = ((60, 80, 120), (90, 125, 170), (120, 160, 205), (150, 190, 230),
              (45, 65, 95), (110, 150, 200))  # BGR
L, R = 1, -1  # side sign: the person's left is image +x for a front-facing figure

# The depth scene (render_depth_sequence). Camera optical frame: x right, y down, z forward [m].
PERSON_HEIGHT_M = 1.7   # nominal figure height (head top to ankles) of every walker
PELVIS_HEIGHT_M = 0.9   # pelvis above the floor: ~0.53 of the height (anthropometric tables)
CAMERA_HEIGHT_M = 1.0   # optical centre above the floor, optical axis horizontal
WALL_DEPTH_M = 6.0      # background: a flat wall facing the camera (no floor in the depth)
FOCAL_FRACTION = 0.9    # fx = fy = 0.9 * width: a 58 deg horizontal field of view
SCENE_FPS = 30.0        # frame rate the walking speeds are scripted for
SCENE_PERIOD = 150      # frames (5 s); the script then starts again with new track ids
# One period of the script: (first frame, x [m], z [m], vx [m/s], vz [m/s]) per walker. Walker
# 0 (2.5 m away) and walker 1 (4 m) walk towards each other and cross at about frame 37, walker
# 0 in front; walker 2 starts left of the view at frame 30 (first pixels at about frame 35), 5 m
# away and slowly coming closer, and passes behind walker 1 at about frame 90. Walker 0 leaves
# the view at about frame 75, walker 1 at about frame 135.
WALKERS = ((0, -1.2, 2.5, 1.2, 0.0), (0, 1.9, 4.0, -1.0, 0.0), (30, -3.4, 5.0, 1.1, -0.3))


def render_people(rng, width, height, num_people, height_range=(0.15, 0.9)):
    """Render ``num_people`` figures on a random background.

    Figure heights (head top to ankles) are log-uniform in ``height_range`` times the image
    height.

    Returns (image (height, width, 3) uint8 BGR, persons): one dict per annotated person with
    ``keypoints`` (17, 3) float32 (x, y, v), ``bbox`` [x, y, w, h], ``area``, ``num_keypoints``.
    A person none of whose keypoints would fall inside the image is not drawn.
    """
    background = random_background(rng, width, height)
    figures = []
    for _ in range(num_people):
        fig = _place_figure(rng, width, height, height_range)
        if fig is not None:
            figures.append(fig)
    figures.sort(key=lambda f: f[0]['height'])  # small = far away, drawn first
    occluders = random_occluders(rng, width, height, figures)
    image, persons = compose(background, figures, occluders, rng)
    return image, [p for p in persons if p is not None]


def make_dataset(out_dir, num_images, seed, width=640, height=480, max_people=5,
                 height_range=(0.15, 0.9)):
    """Write ``images/%06d.jpg`` and a COCO keypoint ``annotations.json``; return its path.

    Image ``i`` is rendered from ``numpy.random.default_rng([seed, i])`` with 0..max_people
    people whose heights are log-uniform in ``height_range`` times the image height.
    """
    img_dir = os.path.join(out_dir, 'images')
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, i])
        image, persons = render_people(rng, width, height,
                                       int(rng.integers(0, max_people + 1)), height_range)
        name = f'{i:06d}.jpg'
        cv2.imwrite(os.path.join(img_dir, name), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({'id': i + 1, 'file_name': name, 'width': width, 'height': height})
        for p in persons:
            annotations.append(_coco_annotation(p, len(annotations) + 1, i + 1))
    path = os.path.join(out_dir, 'annotations.json')
    with open(path, 'w') as f:
        json.dump({'info': {'description': f'rtmo_train synthetic people, seed {seed}'},
                   'images': images, 'annotations': annotations,
                   'categories': [coco_person_category()]}, f)
    return path


def coco_person_category():
    """COCO's person category: keypoint names and the 1-based skeleton edges."""
    return {'id': 1, 'name': 'person', 'supercategory': 'person',
            'keypoints': list(COCO17.names),
            'skeleton': [[a + 1, b + 1] for a, b in COCO17.edges]}


def render_sequence(seed, num_frames, width=640, height=480):
    """Yield (image, persons) for ``num_frames`` frames of people walking across a scene.

    People keep their looks, walk with a swinging gait at steady speeds, enter from the left
    or right border and leave on the other side. ``persons`` are as in :func:`render_people`
    plus ``track_id`` (int, stable while the person is in view).
    """
    rng = np.random.default_rng(seed)
    background = random_background(rng, width, height)
    scene = {'tracks': [], 'next_id': 0}
    for _ in range(int(rng.integers(1, 3))):
        _spawn(rng, scene, width, height, inside=True)
    static_occluders = random_occluders(rng, width, height, [], count=int(rng.integers(0, 2)))
    for _ in range(num_frames):
        if len(scene['tracks']) < 4 and rng.random() < 0.03:
            _spawn(rng, scene, width, height, inside=False)
        _step(scene, width)
        tracks = sorted(scene['tracks'], key=lambda t: t['app']['height'])
        figures = [(t['app'], figure_joints(t['app'], walking_pose(t), t['pos']))
                   for t in tracks]
        image, persons = compose(background, figures, static_occluders, rng)
        out = []
        for track, person in zip(tracks, persons):
            if person is not None:
                person['track_id'] = track['id']
                out.append(person)
        yield image, out


def render_depth_sequence(seed, num_frames, width=640, height=480):
    """Yield (image, depth, persons) for ``num_frames`` frames of the scripted depth scene.

    A pinhole camera (:func:`scene_camera_matrix`, no distortion) looks at a wall
    ``WALL_DEPTH_M`` away; people 1.7 m tall walk across at known distances (``WALKERS``),
    their image height fy * 1.7 / z. They are drawn farthest first, so the nearer one covers
    the farther one where they cross. The seed chooses looks, gait and wall texture; the paths
    are fixed. Frame ``i`` depends only on (seed, i, width, height).

    image:   (height, width, 3) uint8 BGR.
    depth:   (height, width) float32 [m], aligned with ``image`` (same pixels): each person's
             silhouette at that person's z (flat cut-outs), the wall elsewhere.
    persons: as in :func:`render_sequence` (``keypoints`` (17, 3) float32 (x, y, v) with x, y
             rounded to 0.01 px, ``bbox``, ``area``, ``num_keypoints``, ``track_id``) plus
             ``depth`` (the person's z [m]), ``keypoints_3d`` (17, 3) float64 [m] in the camera
             optical frame (x right, y down, z forward): each keypoint's (x, y) back-projected
             at z, zeros where v = 0; ``position_3d`` (3,) float64 [m]: the mean of joints 5,
             6, 11, 12 (shoulders and hips) in 3D, from the true joints also when some are
             outside the image.
    Visibility: v = 2 where the keypoint's pixel shows this person, 1 where a nearer person
    covers it (labelled, not visible; its keypoints_3d is still the point on this person), 0
    outside the image.
    """
    K = scene_camera_matrix(width, height)
    background = random_background(np.random.default_rng([seed, 0]), width, height)
    for index in range(num_frames):
        walkers = sorted(_walkers_at(seed, index, K, width), key=lambda w: -w['z'])
        figures = [(w['app'], w['joints']) for w in walkers]
        img, persons, owner = _draw(background, figures, [])
        depth = np.full((height, width), WALL_DEPTH_M, np.float32)
        out = []
        for i, (walker, person) in enumerate(zip(walkers, persons)):
            depth[owner == i] = walker['z']
            if person is not None:
                out.append(_add_3d(person, walker, K))
        yield _finish(img, np.random.default_rng([seed, 2, index])), depth, out


def scene_camera_matrix(width, height):
    """Pinhole camera matrix K (3, 3) of :func:`render_depth_sequence` for a width x height image.

    fx = fy = 0.9 * width; principal point at the image centre ((width - 1) / 2,
    (height - 1) / 2) in the keypoints' convention (pixel (0, 0)'s centre is (0, 0), as in
    ROS CameraInfo).
    """
    f = FOCAL_FRACTION * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def back_project(points, z, K):
    """3D points (N, 3) [m], camera optical frame, of image points (N, 2) [px] at depth ``z``."""
    points = np.asarray(points, np.float64)
    x = (points[:, 0] - K[0, 2]) * z / K[0, 0]
    y = (points[:, 1] - K[1, 2]) * z / K[1, 1]
    return np.stack([x, y, np.full_like(x, z)], axis=1)


def project(points_3d, K):
    """Image points (N, 2) [px] of 3D points (N, 3) [m] in the camera optical frame (pinhole)."""
    points_3d = np.asarray(points_3d, np.float64)
    return np.stack([K[0, 0] * points_3d[:, 0] / points_3d[:, 2] + K[0, 2],
                     K[1, 1] * points_3d[:, 1] / points_3d[:, 2] + K[1, 2]], axis=1)


# --------------------------------------------------------------------------- figures


def random_appearance(rng, height):
    """Sizes (pixels) and colours (BGR) of one figure ``height`` pixels tall."""
    app = {k: v * height * rng.uniform(0.9, 1.1) for k, v in PROPORTIONS.items()}
    app['height'] = float(height)
    skin = np.array(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], float)
    app['skin'] = tuple(np.clip(skin + rng.uniform(-15, 15, 3), 0, 255))
    app['shirt'] = _random_colour(rng)
    app['pants'] = _random_colour(rng)
    app['shoes'] = tuple(rng.uniform(10, 90, 3))
    app['hair'] = tuple(rng.uniform(5, 80, 3) * rng.choice([1.0, 2.5]))
    return app


def random_pose(rng):
    """Joint angles in degrees: arm/leg abduction (+ = away from the body), signed flexion."""
    pose = {'lean': rng.normal(0, 7), 'tilt': rng.normal(0, 10), 'turn': rng.uniform(-1, 1),
            'width': rng.uniform(0.6, 1.0)}
    for side in ('l', 'r'):
        pose[side + '_sho'] = rng.uniform(-15, 165)
        pose[side + '_elb'] = rng.uniform(-150, 150)
        pose[side + '_hip'] = rng.uniform(-8, 50)
        pose[side + '_knee'] = rng.uniform(-110, 110) * rng.uniform(0, 1)
    return pose


def figure_joints(app, pose, pelvis):
    """The 17 COCO joints (17, 2) plus the neck point, for a pelvis at image point ``pelvis``."""
    lean = math.radians(pose['lean'])
    down, right = _axes(lean)
    pelvis = np.asarray(pelvis, float)
    neck = pelvis - down * app['torso']
    k = np.zeros((17, 2))
    k[5], k[6] = neck + right * app['shoulder'] * pose['width'], \
        neck - right * app['shoulder'] * pose['width']
    k[11], k[12] = pelvis + right * app['hip'], pelvis - right * app['hip']
    hd, hr = _axes(lean + math.radians(pose['tilt']))
    head, r, turn = neck - hd * app['neck'], app['head_r'], pose['turn']
    k[0] = head + hd * 0.25 * r + hr * turn * 0.4 * r
    k[1], k[2] = (head - hd * 0.15 * r + hr * (s * 0.4 + turn * 0.3) * r for s in (L, R))
    k[3], k[4] = head + hr * 0.9 * r, head - hr * 0.9 * r
    for side, sho, elb, wri, hip, knee, ank in ((L, 5, 7, 9, 11, 13, 15),
                                                (R, 6, 8, 10, 12, 14, 16)):
        s = 'l' if side == L else 'r'
        upper = lean + side * math.radians(pose[s + '_sho'])
        k[elb] = k[sho] + _axes(upper)[0] * app['upper_arm']
        k[wri] = k[elb] + _axes(upper + math.radians(pose[s + '_elb']))[0] * app['forearm']
        thigh = lean + side * math.radians(pose[s + '_hip'])
        k[knee] = k[hip] + _axes(thigh)[0] * app['thigh']
        k[ank] = k[knee] + _axes(thigh + math.radians(pose[s + '_knee']))[0] * app['shin']
    return {'keypoints': k, 'neck': neck, 'head': head, 'head_down': hd}


def figure_primitives(app, joints):
    """Drawing primitives back to front: (kind, geometry, thickness, colour)."""
    k, neck, head = joints['keypoints'], joints['neck'], joints['head']
    aw, lw, r = app['arm_w'], app['leg_w'], app['head_r']
    prims = []
    for hip, knee, ank in ((11, 13, 15), (12, 14, 16)):
        prims += [('line', (k[hip], k[knee]), lw, app['pants']),
                  ('line', (k[knee], k[ank]), lw * 0.85, app['pants']),
                  ('circle', (k[ank],), lw * 0.55, app['shoes'])]
    torso = np.stack([k[5], k[6], k[12], k[11]])
    prims += [('poly', (torso,), 0, app['shirt']),
              ('line', (neck, head), aw * 0.9, app['skin']),
              ('circle', (head - joints['head_down'] * 0.25 * r,), r * 1.02, app['hair']),
              ('circle', (head,), r, app['skin'])]
    for idx, colour in ((0, (40, 50, 90)), (1, (25, 25, 25)), (2, (25, 25, 25))):
        prims.append(('dot', (k[idx],), max(1.0, 0.14 * r), colour))
    for ear in (3, 4):
        prims.append(('circle', (k[ear],), 0.22 * r, app['skin']))
    for sho, elb, wri in ((5, 7, 9), (6, 8, 10)):
        prims += [('line', (k[sho], k[elb]), aw, app['shirt']),
                  ('line', (k[elb], k[wri]), aw * 0.8, app['skin']),
                  ('circle', (k[wri],), aw * 0.6, app['skin'])]
    return prims


def _axes(angle):
    """(down, right) unit vectors of a body part leaning ``angle`` rad towards image +x."""
    return (np.array([math.sin(angle), math.cos(angle)]),
            np.array([math.cos(angle), -math.sin(angle)]))


def _random_colour(rng):
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(60, 256), rng.integers(60, 256)]]])
    return tuple(float(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _place_figure(rng, width, height, height_range=(0.15, 0.9), tries=10):
    """A random figure with at least 3 joints inside the image, or None."""
    low, high = height_range
    for _ in range(tries):
        size = math.exp(rng.uniform(math.log(low * height), math.log(high * height)))
        app = random_appearance(rng, size)
        pelvis = (rng.uniform(-0.1, 1.1) * width, rng.uniform(0.3 * size, height + 0.15 * size))
        joints = figure_joints(app, random_pose(rng), pelvis)
        if _inside(joints['keypoints'], width, height).sum() >= 3:
            return app, joints
    return None


def _inside(points, width, height):
    return ((points[:, 0] >= 0) & (points[:, 0] <= width - 1)
            & (points[:, 1] >= 0) & (points[:, 1] <= height - 1))


# --------------------------------------------------------------------------- sequences


def _spawn(rng, scene, width, height, inside):
    size = math.exp(rng.uniform(math.log(0.25 * height), math.log(0.8 * height)))
    direction = 1 if rng.random() < 0.5 else -1
    if inside:
        x = rng.uniform(0.15, 0.85) * width
    else:
        x = -0.25 * size if direction > 0 else width + 0.25 * size
    y = rng.uniform(0.55 * size, height - 0.3 * size) if height > 0.85 * size else 0.55 * size
    app = random_appearance(rng, size)
    base = random_pose(rng)
    base.update(lean=rng.normal(0, 3), turn=rng.uniform(-0.5, 0.5), width=rng.uniform(0.8, 1))
    scene['tracks'].append({
        'id': scene['next_id'], 'app': app, 'base': base, 'pos': np.array([x, y]),
        'vel': np.array([direction * size * rng.uniform(0.015, 0.035), rng.normal(0, 0.2)]),
        'phase': rng.uniform(0, 2 * math.pi), 'cadence': rng.uniform(0.15, 0.3)})
    scene['next_id'] += 1


def _step(scene, width):
    kept = []
    for t in scene['tracks']:
        t['pos'] = t['pos'] + t['vel']
        t['phase'] += t['cadence']
        margin = 0.4 * t['app']['height']
        if -margin <= t['pos'][0] <= width + margin:
            kept.append(t)
    scene['tracks'] = kept


def walking_pose(track):
    """The track's base pose with arms and legs swinging in opposite phase."""
    pose = dict(track['base'])
    swing = math.sin(track['phase'])
    pose.update(l_sho=8 + 18 * swing, r_sho=8 - 18 * swing, l_elb=-15 - 15 * swing,
                r_elb=-15 + 15 * swing, l_hip=6 + 14 * swing, r_hip=6 - 14 * swing,
                l_knee=20 * max(0.0, -swing), r_knee=20 * max(0.0, swing))
    return pose


def _walkers_at(seed, index, K, width):
    """The walkers of the depth scene near the view at frame ``index`` (unsorted).

    Each: ``track_id``, ``z`` [m], ``app`` (sizes in pixels at z), ``joints``
    (:func:`figure_joints`). Walkers of the current and the previous period are considered;
    an older one is far out of view.
    """
    cycle = index // SCENE_PERIOD
    out = []
    for c in range(max(0, cycle - 1), cycle + 1):
        for j, (start, x0, z0, vx, vz) in enumerate(WALKERS):
            first = start + c * SCENE_PERIOD
            if index < first:
                continue
            t = (index - first) / SCENE_FPS
            x, z = x0 + vx * t, z0 + vz * t
            pixels = K[1, 1] * PERSON_HEIGHT_M / z
            pelvis = project([[x, CAMERA_HEIGHT_M - PELVIS_HEIGHT_M, z]], K)[0]
            if abs(pelvis[0] - K[0, 2]) > width / 2 + 0.6 * pixels:
                continue  # not one of its pixels can be in view
            track_id = c * len(WALKERS) + j
            looks = _walker_looks(seed, track_id)
            app = dict(looks['unit'], height=pixels)
            app.update({k: looks['unit'][k] * pixels for k in PROPORTIONS})
            gait = {'base': looks['base'],
                    'phase': looks['phase'] + looks['cadence'] * (index - first)}
            out.append({'track_id': track_id, 'z': z, 'app': app,
                        'joints': figure_joints(app, walking_pose(gait), pelvis)})
    return out


def _walker_looks(seed, track_id):
    """Appearance (sizes for a 1 px figure), base pose and gait of one walker, from the seed."""
    rng = np.random.default_rng([seed, 1, track_id])
    unit = random_appearance(rng, 1.0)
    base = random_pose(rng)
    base.update(lean=rng.normal(0, 3), turn=rng.uniform(-0.5, 0.5), width=rng.uniform(0.8, 1))
    return {'unit': unit, 'base': base, 'phase': rng.uniform(0, 2 * math.pi),
            'cadence': rng.uniform(0.15, 0.3)}


def _add_3d(person, walker, K):
    """Add ``track_id``, ``depth``, ``keypoints_3d`` and ``position_3d``; round x, y to 0.01 px."""
    joints = np.round(walker['joints']['keypoints'], 2)  # the 2D GT as written to JSON
    joints_3d = back_project(joints, walker['z'], K)
    labelled = person['keypoints'][:, 2] > 0
    person['keypoints'][:, :2] = np.where(labelled[:, None], joints, 0.0)
    person.update(track_id=walker['track_id'], depth=float(walker['z']),
                  keypoints_3d=np.where(labelled[:, None], joints_3d, 0.0),
                  position_3d=joints_3d[[5, 6, 11, 12]].mean(axis=0))
    return person


# --------------------------------------------------------------------------- composing


def compose(background, figures, occluders, rng):
    """Draw ``figures`` (back to front) then ``occluders``; annotate from the pixel owners.

    Returns (image, persons) with ``persons[i]`` the annotation of ``figures[i]`` or None when
    none of its keypoints is inside the image.
    """
    img, persons, _ = _draw(background, figures, occluders)
    return _finish(img, rng), persons


def _draw(background, figures, occluders):
    """:func:`compose` before the camera noise; also returns the (H, W) int16 pixel owner map.

    owner: index of the figure that shows at each pixel, -1 background, -2 an occluder.
    """
    img = background.copy()
    h, w = img.shape[:2]
    owner = np.full((h, w), -1, np.int16)
    masks = []
    for i, (app, joints) in enumerate(figures):
        prims = figure_primitives(app, joints)
        mask = np.zeros((h, w), np.uint8)
        paint(mask, prims, mask=True)
        paint(img, prims)
        owner[mask > 0] = i
        masks.append(mask)
    for prim in occluders:
        mask = np.zeros((h, w), np.uint8)
        paint(mask, [prim], mask=True)
        paint(img, [prim])
        owner[mask > 0] = -2
    persons = [_annotate(i, joints['keypoints'], masks[i], owner)
               for i, (_, joints) in enumerate(figures)]
    return img, persons, owner


def _annotate(index, keypoints, mask, owner):
    h, w = mask.shape
    inside = _inside(keypoints, w, h)
    xi = np.clip(np.round(keypoints[:, 0]), 0, w - 1).astype(int)
    yi = np.clip(np.round(keypoints[:, 1]), 0, h - 1).astype(int)
    v = np.where(inside, np.where(owner[yi, xi] == index, 2, 1), 0)
    ys, xs = np.nonzero(mask)
    if not inside.any() or len(xs) == 0:
        return None
    kpts = np.concatenate([keypoints, v[:, None]], axis=1).astype(np.float32)
    kpts[v == 0] = 0.0
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    return {'keypoints': kpts, 'num_keypoints': int((v > 0).sum()),
            'bbox': [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
            'area': float(len(xs))}


def paint(canvas, prims, mask=False):
    """Draw primitives, each outlined in a darker shade then filled (mask mode: value 1)."""
    line_type = cv2.LINE_8 if mask else cv2.LINE_AA
    for kind, geom, thick, colour in prims:
        if kind != 'dot':  # the outline is part of the silhouette too
            grow = max(1.0, 0.08 * thick)
            _shape(canvas, kind, geom, thick, 1 if mask else tuple(0.45 * c for c in colour),
                   line_type, grow)
        if not mask or kind == 'dot':
            _shape(canvas, kind, geom, thick, 1 if mask else colour, line_type, 0.0)


def _shape(canvas, kind, geom, thick, colour, line_type, grow):
    """One primitive, enlarged by ``grow`` pixels on every side (for outlines)."""
    sub = 16  # 4 fractional bits for sub-pixel geometry
    if kind == 'line':
        p, q = (tuple(int(round(c * sub)) for c in pt) for pt in geom)
        cv2.line(canvas, p, q, colour, max(1, int(round(thick + 2 * grow))), line_type, shift=4)
    elif kind in ('circle', 'dot'):
        c = tuple(int(round(v * sub)) for v in geom[0])
        cv2.circle(canvas, c, max(sub, int(round((thick + grow) * sub))), colour, -1,
                   line_type, shift=4)
    elif kind == 'poly':
        pts = np.round(geom[0] * sub).astype(np.int32)
        cv2.fillPoly(canvas, [pts], colour, line_type, shift=4)
        if grow:
            cv2.polylines(canvas, [pts], True, colour, max(1, int(round(2 * grow))), line_type,
                          shift=4)
    elif kind == 'ellipse':
        c, axes, angle = geom
        axes = (int(axes[0] + grow), int(axes[1] + grow))
        cv2.ellipse(canvas, (int(c[0]), int(c[1])), axes, angle, 0, 360, colour, -1, line_type)
    elif kind == 'rect':
        p, q = geom
        cv2.rectangle(canvas, (int(p[0] - grow), int(p[1] - grow)),
                      (int(q[0] + grow), int(q[1] + grow)), colour, -1)


def _finish(img, rng):
    """Camera-like noise and a slight blur."""
    noisy = img.astype(np.float32) + rng.normal(0, rng.uniform(2, 8), img.shape)
    sigma = rng.uniform(0, 0.8)
    if sigma > 0.3:
        noisy = cv2.GaussianBlur(noisy, (0, 0), sigma)
    return np.clip(noisy, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- scenery


def random_background(rng, width, height):
    """Smooth multi-scale colour noise, an optional floor, and clutter shapes (no limbs)."""
    field = np.zeros((height, width), np.float32)
    for cells, weight in ((3, 1.0), (8, 0.5), (24, 0.25)):
        coarse = rng.random((cells, max(2, cells * width // height))).astype(np.float32)
        field += weight * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    field = (field - field.min()) / max(float(np.ptp(field)), 1e-6)
    c0, c1 = np.array(_random_colour(rng)) * 0.8, np.array(_random_colour(rng)) * 0.8
    img = (c0 * (1 - field[..., None]) + c1 * field[..., None]).astype(np.float32)
    if rng.random() < 0.5:  # a floor
        y = int(rng.uniform(0.4, 0.8) * height)
        img[y:] = 0.5 * img[y:] + 0.5 * np.array(_random_colour(rng)) * 0.7
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 10))):
        paint(img, [_clutter_shape(rng, width, height)])
    return img


def _clutter_shape(rng, width, height):
    colour = _random_colour(rng)
    c = (rng.uniform(0, width), rng.uniform(0, height))
    size = rng.uniform(0.03, 0.25) * min(width, height)
    if rng.random() < 0.5:
        return ('rect', ((c[0] - size, c[1] - size * rng.uniform(0.3, 1.5)),
                         (c[0] + size, c[1] + size * rng.uniform(0.3, 1.5))), 0, colour)
    return ('ellipse', (c, (size, size * rng.uniform(0.3, 1.0)), rng.uniform(0, 180)), 0,
            colour)


def random_occluders(rng, width, height, figures, count=None):
    """0..2 random shapes; about half are placed on a joint of a figure to hide it."""
    count = int(rng.integers(0, 3)) if count is None else count
    prims = []
    for _ in range(count):
        prim = _clutter_shape(rng, width, height)
        if figures and rng.random() < 0.5:
            app, joints = figures[int(rng.integers(len(figures)))]
            joint = joints['keypoints'][int(rng.integers(17))]
            size = app['height'] * rng.uniform(0.08, 0.2)
            prim = ('ellipse', (tuple(joint), (size, size * rng.uniform(0.4, 1.0)),
                                rng.uniform(0, 180)), 0, _random_colour(rng))
        prims.append(prim)
    return prims


def _coco_annotation(person, ann_id, image_id):
    return {'id': ann_id, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
            'keypoints': [round(float(v), 2) for v in person['keypoints'].reshape(-1)],
            'num_keypoints': person['num_keypoints'],
            'bbox': [round(v, 2) for v in person['bbox']], 'area': person['area']}
