"""The synthetic-people generator: deterministic, valid COCO, truthful visibility flags."""
import json

import numpy as np
import pytest

from rtmo_train.data.coco import CocoKeypointDataset
from rtmo_train.data.synthetic import (
    WALL_DEPTH_M,
    compose,
    figure_joints,
    make_dataset,
    project,
    random_appearance,
    random_pose,
    render_depth_sequence,
    render_people,
    render_sequence,
    scene_camera_matrix,
)


def test_render_people_is_deterministic_by_seed():
    a_img, a = render_people(np.random.default_rng(5), 320, 240, 4)
    b_img, b = render_people(np.random.default_rng(5), 320, 240, 4)
    c_img, _ = render_people(np.random.default_rng(6), 320, 240, 4)
    assert a_img.shape == (240, 320, 3) and a_img.dtype == np.uint8
    np.testing.assert_array_equal(a_img, b_img)
    assert len(a) == len(b) >= 1
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p['keypoints'], q['keypoints'])
    assert not np.array_equal(a_img, c_img)
    empty_img, empty = render_people(np.random.default_rng(1), 64, 48, 0)
    assert empty == [] and empty_img.shape == (48, 64, 3)


def test_annotations_are_consistent_with_the_image():
    for seed in range(6):
        _, persons = render_people(np.random.default_rng(seed), 320, 240, 5)
        for p in persons:
            k = p['keypoints']
            assert k.shape == (17, 3) and set(np.unique(k[:, 2])) <= {0, 1, 2}
            assert p['num_keypoints'] == int((k[:, 2] > 0).sum()) >= 1
            inside = k[k[:, 2] > 0]
            assert (inside[:, 0] >= 0).all() and (inside[:, 0] <= 319).all()
            assert (inside[:, 1] >= 0).all() and (inside[:, 1] <= 239).all()
            assert (k[k[:, 2] == 0] == 0).all()  # unlabelled: 0, 0, 0 as in COCO
            x, y, w, h = p['bbox']
            assert w > 0 and h > 0 and x + w <= 320 and y + h <= 240
            assert (inside[:, 0] >= x - 1).all() and (inside[:, 0] <= x + w + 1).all()
            assert 0 < p['area'] <= w * h


def one_figure(pelvis, size=120):
    rng = np.random.default_rng(3)
    app = random_appearance(rng, size)
    pose = dict(random_pose(rng), l_sho=20, r_sho=20, l_elb=0, r_elb=0, l_hip=10, r_hip=10,
                l_knee=0, r_knee=0)
    return app, figure_joints(app, pose, pelvis)


def test_visibility_flags_follow_occlusion_and_borders():
    background = np.full((240, 320, 3), 90, np.uint8)
    rng = np.random.default_rng(0)
    app, joints = one_figure((160, 130))
    _, (clear,) = compose(background, [(app, joints)], [], rng)
    assert (clear['keypoints'][:, 2] == 2).all()  # nothing in the way
    wrist = joints['keypoints'][9]
    blocker = ('ellipse', (tuple(wrist), (6, 6), 0.0), 0, (0, 255, 0))
    img, (hidden,) = compose(background, [(app, joints)], [blocker], rng)
    assert hidden['keypoints'][9, 2] == 1 and hidden['keypoints'][10, 2] == 2
    assert img[int(wrist[1]), int(wrist[0]), 1] > 200  # the green blocker is what shows
    in_front = one_figure((160, 135), size=125)
    _, (back, front) = compose(background, [(app, joints), in_front], [], rng)
    assert (front['keypoints'][:, 2] == 2).all() and (back['keypoints'][:, 2] == 1).any()
    _, (cut,) = compose(background, [one_figure((160, 215))], [], rng)
    assert (cut['keypoints'][15:17, 2] == 0).all() and (cut['keypoints'][:5, 2] == 2).all()


def test_make_dataset_writes_loadable_coco(tmp_path):
    coco_api = pytest.importorskip('xtcocotools.coco')
    path = make_dataset(str(tmp_path / 'a'), 5, seed=9, width=160, height=120)
    again = make_dataset(str(tmp_path / 'b'), 5, seed=9, width=160, height=120)
    assert open(path).read().replace('/a', '') == open(again).read().replace('/b', '')
    assert (tmp_path / 'a' / 'images' / '000004.jpg').read_bytes() == \
        (tmp_path / 'b' / 'images' / '000004.jpg').read_bytes()
    coco = coco_api.COCO(path)
    assert len(coco.getImgIds()) == 5
    cat = coco.loadCats(1)[0]
    assert len(cat['keypoints']) == 17 and cat['keypoints'][0] == 'nose'
    assert cat['skeleton'][0] == [16, 14] and min(min(e) for e in cat['skeleton']) == 1
    data = json.load(open(path))
    assert data['annotations'], 'five images should hold some people'
    ds = CocoKeypointDataset(path, tmp_path / 'a' / 'images', include_empty=True)
    assert len(ds) == 5 and ds.load(0)['img'].shape == (120, 160, 3)


def test_render_sequence_moves_people_smoothly_in_and_out():
    frames = list(render_sequence(4, 200, 160, 120))
    assert len(frames) == 200 and frames[0][0].shape == (120, 160, 3)
    first = list(render_sequence(4, 3, 160, 120))
    np.testing.assert_array_equal(first[2][0], frames[2][0])
    ids_per_frame = [{p['track_id'] for p in persons} for _, persons in frames]
    all_ids = set().union(*ids_per_frame)
    assert len(all_ids) >= 2
    assert any(ids_per_frame[0] - ids for ids in ids_per_frame)  # someone leaves or
    assert any(ids - ids_per_frame[0] for ids in ids_per_frame)  # someone enters
    for (_, prev), (_, cur) in zip(frames, frames[1:]):
        before = {p['track_id']: p['keypoints'] for p in prev}
        for p in cur:
            if p['track_id'] in before:
                both = (p['keypoints'][:, 2] > 0) & (before[p['track_id']][:, 2] > 0)
                step = np.abs(p['keypoints'][both, :2] - before[p['track_id']][both, :2])
                assert step.size == 0 or step.max() < 15  # pixels per frame


def test_make_dataset_people_count_and_size(tmp_path):
    """max_people and height_range bound the people per image and their size."""
    path = make_dataset(str(tmp_path), 12, seed=4, width=160, height=120, max_people=2,
                        height_range=(0.5, 0.6))
    data = json.load(open(path))
    per_image = [sum(a['image_id'] == im['id'] for a in data['annotations'])
                 for im in data['images']]
    assert max(per_image) <= 2 and sum(per_image) >= 6
    # boxes of whole figures: 60..72 px tall standing, less with bent knees or a lean
    tall = [a['bbox'][3] for a in data['annotations'] if a['num_keypoints'] == 17]
    assert tall and min(tall) > 0.5 * 120 * 0.6 and max(tall) < 0.6 * 120 * 1.3


# -- the depth scene -----------------------------------------------------------------------------
W, H = 160, 120


@pytest.fixture(scope='module')
def depth_scene():
    """100 frames (3.3 s) of seed 0: walkers 0 and 1 cross at ~frame 37, 1 and 2 at ~90."""
    return list(render_depth_sequence(0, 100, W, H))


def box_iou(a, b):
    """IoU of two COCO [x, y, w, h] boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return iw * ih / (a[2] * a[3] + b[2] * b[3] - iw * ih)


def test_depth_scene_camera_and_determinism(depth_scene):
    K = scene_camera_matrix(W, H)
    np.testing.assert_allclose(K, [[144, 0, 79.5], [0, 144, 59.5], [0, 0, 1]])
    again = list(render_depth_sequence(0, 3, W, H))
    for (img, depth, persons), (img2, depth2, persons2) in zip(depth_scene, again):
        np.testing.assert_array_equal(img, img2)
        np.testing.assert_array_equal(depth, depth2)
        assert [p['track_id'] for p in persons] == [p['track_id'] for p in persons2]
    other, other_depth, _ = next(render_depth_sequence(1, 1, W, H))
    assert not np.array_equal(other, depth_scene[0][0])  # the seed changes the looks, not
    np.testing.assert_array_equal(np.unique(other_depth), np.unique(depth_scene[0][1]))  # paths
    img, depth, _ = depth_scene[0]
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert depth.shape == (H, W) and depth.dtype == np.float32


def test_depth_image_is_each_persons_z_on_its_silhouette_and_the_wall_elsewhere(depth_scene):
    whole = 0
    for _, depth, persons in depth_scene:
        z = {p['track_id']: np.float32(p['depth']) for p in persons}
        known = np.isin(depth, [np.float32(WALL_DEPTH_M), *z.values()])
        # a walker with no keypoint in view yet (entering, leaving) is drawn, not annotated
        assert known[:, 8:-8].all()
        for p in persons:
            k = p['keypoints']
            xi, yi = (np.round(k[:, i]).astype(int) for i in (0, 1))
            seen, covered = k[:, 2] == 2, k[:, 2] == 1
            assert (depth[yi[seen], xi[seen]] == z[p['track_id']]).all()
            assert (depth[yi[covered], xi[covered]] < z[p['track_id']]).all()  # nearer person
            x, y, w, h = (int(v) for v in p['bbox'])
            mine = depth == z[p['track_id']]
            inside = np.zeros_like(mine)
            inside[y:y + h, x:x + w] = True
            assert not (mine & ~inside).any()  # the silhouette lies in the person's box
            alone = all(box_iou(p['bbox'], q['bbox']) == 0 for q in persons if q is not p)
            if alone:  # nobody in front: every pixel of the figure carries its z
                assert mine.sum() == p['area']
                whole += 1
    assert whole > 100


def test_keypoints_3d_back_project_the_2d_keypoints(depth_scene):
    K = scene_camera_matrix(W, H)
    for _, _, persons in depth_scene:
        for p in persons:
            k, k3 = p['keypoints'], p['keypoints_3d']
            labelled = k[:, 2] > 0
            assert k3.shape == (17, 3) and p['position_3d'].shape == (3,)
            np.testing.assert_allclose(project(k3[labelled], K), k[labelled, :2], atol=1e-3)
            assert (k3[labelled, 2] == p['depth']).all() and (k3[~labelled] == 0).all()
            assert p['position_3d'][2] == p['depth']
            if labelled[[5, 6, 11, 12]].all():
                np.testing.assert_allclose(p['position_3d'], k3[[5, 6, 11, 12]].mean(axis=0),
                                           rtol=0, atol=1e-12)
            # image height ~ fy * 1.7 m / z: nose to ankles spans about 1.45 m
            if labelled.all():
                assert 1.3 < np.ptp(k[:, 1]) * p['depth'] / K[1, 1] < 1.65


def test_people_cross_occlude_and_a_third_one_enters(depth_scene):
    crossings = []
    for index, (_, depth, persons) in enumerate(depth_scene):
        for near in persons:
            for far in persons:
                if near['depth'] < far['depth'] and box_iou(near['bbox'], far['bbox']) > 0.3:
                    hidden = far['keypoints'][:, 2] == 1
                    k = far['keypoints'][hidden]
                    cover = depth[np.round(k[:, 1]).astype(int), np.round(k[:, 0]).astype(int)]
                    assert (cover == np.float32(near['depth'])).all()
                    crossings.append((index, near['track_id'], far['track_id'], hidden.sum()))
    pairs = {(near, far) for _, near, far, hidden in crossings if hidden > 0}
    assert {(0, 1), (1, 2)} <= pairs  # the near walker hides the far one, twice
    first = {}
    for index, (_, _, persons) in enumerate(depth_scene):
        for p in persons:
            first.setdefault(p['track_id'], index)
    assert first[0] == first[1] == 0 and first[2] > 30  # the third one enters later
    z2 = [p['depth'] for _, _, persons in depth_scene for p in persons if p['track_id'] == 2]
    assert z2[0] > z2[-1] + 0.2  # and walks towards the camera
