"""Faces in whole photos (issue 15, ``restore --faces detect``): detection on real photos, alignment to
facexlib's FFHQ template, paste-back, and the command end to end.

References: facexlib's own ``FaceRestoreHelper`` (alignment, paste) and ``RetinaFace`` (network and
decoding), run here with their weights stubbed or random; OpenCV's resize for the background; exact
similarities and linear ramps for geometry."""

import zlib

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from latent_pmrf.data.image_io import read_image
from latent_pmrf.faces.alignment import (FACE_SIZE, FFHQ_TEMPLATE_512, PAD_RGB, alignment_matrix, paste_matrix,
                                         warp_to_template)
from latent_pmrf.faces.detection import DETECTORS, Face, build_detector, select_faces
from latent_pmrf.faces.paste import paste_face, upscale_background
from latent_pmrf.weights import WEIGHT_FILES, MissingWeightsError


def _landmarks(scale: float, angle_deg: float, centre) -> np.ndarray:
    """The template turned by ``angle_deg``, scaled by ``scale`` and centred at ``centre``: the 5
    landmarks of a face ``scale`` times the template's size."""
    theta = np.deg2rad(angle_deg)
    rotation = scale * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return (FFHQ_TEMPLATE_512 - FACE_SIZE / 2) @ rotation.T + np.asarray(centre, float)


def _texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random 8-bit RGB photo."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 3)
    return np.clip(np.rint((smooth - smooth.mean()) * 6 + 128), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mtcnn():
    return build_detector("mtcnn")


@pytest.fixture
def facexlib_helper(monkeypatch):
    """facexlib's FaceRestoreHelper without its networks (their weights are not here): its template,
    alignment and paste-back are the reference."""
    helper = pytest.importorskip("facexlib.utils.face_restoration_helper")
    monkeypatch.setattr(helper, "init_detection_model", lambda *args, **kwargs: None)
    monkeypatch.setattr(helper, "init_parsing_model", lambda *args, **kwargs: None)
    return helper.FaceRestoreHelper(1, face_size=512, device="cpu")


# ---------------------------------------------------------------- alignment and paste-back


def test_known_similarity_is_recovered_and_maps_the_landmarks_onto_the_template():
    landmarks = _landmarks(0.37, 17.0, (300.5, 210.25))
    matrix = alignment_matrix(landmarks)
    mapped = np.c_[landmarks, np.ones(5)] @ matrix.T
    assert np.abs(mapped - FFHQ_TEMPLATE_512).max() < 1e-4  # OpenCV's refinement stops about here
    assert np.isclose(np.sqrt(np.linalg.det(matrix[:, :2])), 1 / 0.37, rtol=1e-6)
    assert np.isclose(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])), -17.0, atol=1e-5)


@pytest.mark.parametrize("face_scale, angle", [(1.3, 12.0), (0.35, -20.0)])
def test_template_matrix_and_crop_are_facexlibs(facexlib_helper, face_scale, angle):
    photo = _texture(701, 803)
    rng = np.random.default_rng(1)
    landmarks = (_landmarks(face_scale, angle, (380, 330)) + rng.normal(0, 1.5, (5, 2))).astype(np.float32)
    helper = facexlib_helper
    helper.read_image(photo[..., ::-1].copy())  # facexlib works in BGR
    helper.all_landmarks_5 = [landmarks]
    helper.align_warp_face()
    assert np.array_equal(helper.face_template, FFHQ_TEMPLATE_512)
    matrix = alignment_matrix(landmarks)
    np.testing.assert_array_equal(matrix, helper.affine_matrices[0])
    crop = warp_to_template(photo.astype(np.float32) / 255, matrix)
    # facexlib rounds its uint8 warp (and pads with the same gray)
    assert np.abs(crop * 255 - helper.cropped_faces[0][..., ::-1]).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("face_scale, black_face, low, high", [(1.3, False, -0.5, 1.5), (0.35, True, -2, 2)])
def test_paste_at_upscale_1_is_facexlibs(facexlib_helper, face_scale, black_face, low, high):
    """Faces no smaller than the crop: facexlib's result up to its 8-bit rounding (its warped face is
    rounded, its blend truncated: -0.5..1.5 levels). Smaller faces, which we shrink with an area
    filter first, have facexlib's geometry and mask: the same result for a black face, within 2
    levels (its mask comes from a 512² square, ours from the shrunk one)."""
    photo = _texture(701, 803)
    landmarks = _landmarks(face_scale, 12.0, (380, 330)).astype(np.float32)
    restored = np.zeros((512, 512, 3), np.uint8) if black_face else \
        np.random.default_rng(2).integers(0, 256, (512, 512, 3)).astype(np.uint8)
    helper = facexlib_helper
    helper.read_image(photo[..., ::-1].copy())
    helper.all_landmarks_5 = [landmarks]
    helper.align_warp_face()
    helper.add_restored_face(restored[..., ::-1].copy())
    helper.get_inverse_affine()
    reference = helper.paste_faces_to_input_image()[..., ::-1].astype(np.float64)
    canvas = photo.astype(np.float32) / 255
    paste_face(canvas, restored.astype(np.float32) / 255, alignment_matrix(landmarks))
    difference = canvas * 255 - reference
    assert low - 1e-3 <= difference.min() and difference.max() <= high + 1e-3, (difference.min(), difference.max())
    assert (np.abs(reference - photo) > 2).any(-1).sum() > 10_000  # a face was pasted


@pytest.mark.parametrize("upscale", [1, 2])
@pytest.mark.parametrize("face_scale", [0.3, 1.2])
def test_align_then_paste_back_round_trips_the_crop_region(upscale, face_scale):
    """On a photo whose red and green are its x and y coordinates, the aligned crop shows the
    coordinates of the photo points it samples (known from the similarity), and pasting that crop
    back onto the photo enlarged by bicubic changes no coordinate by more than 0.1 pixel anywhere
    under the mask (OpenCV's warps sample at 1/32 pixel; facexlib's s/2 offset would move it by a
    quarter of a pixel at s = 2)."""
    side = int(FACE_SIZE * face_scale * 1.3) + 40
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    photo = np.stack([xs / side, ys / side, np.full_like(xs, 0.5)], axis=-1)
    landmarks = _landmarks(face_scale, 15.0, (side / 2, side / 2 + 3))
    matrix = alignment_matrix(landmarks)

    crop = warp_to_template(photo, matrix)
    inverse = cv2.invertAffineTransform(matrix)
    rows, cols = np.mgrid[0:FACE_SIZE, 0:FACE_SIZE]
    source = np.stack([cols, rows], axis=-1) @ inverse[:, :2].T + inverse[:, 2]  # the (x, y) each crop pixel samples
    assert np.abs(crop[..., :2] * side - source).max() < 0.01

    background = upscale_background(photo, upscale)
    canvas = background.copy()
    mask, (y0, y1, x0, x1) = paste_face(canvas, crop, matrix, upscale)
    assert (mask > 0.999).sum() > 0.4 * (FACE_SIZE * face_scale * upscale) ** 2
    under = mask > 0
    moved = np.abs(canvas[y0:y1, x0:x1, :2] - background[y0:y1, x0:x1, :2])[under] * side
    assert moved.max() < 0.1, moved.max()


@pytest.mark.parametrize("upscale", [1, 3])
def test_pixels_outside_every_face_mask_are_the_background(upscale):
    photo = _texture(301, 457).astype(np.float32) / 255  # odd sizes
    background = upscale_background(photo, upscale)
    if upscale > 1:  # the chosen upscaler: OpenCV's bicubic
        expected = cv2.resize(photo, (457 * upscale, 301 * upscale), interpolation=cv2.INTER_CUBIC)
        np.testing.assert_array_equal(background, np.clip(expected, 0, 1))
    canvas = background.copy()
    covered = np.zeros(canvas.shape[:2], bool)
    faces = [_landmarks(0.2, 5.0, (100, 150)), _landmarks(0.25, -30.0, (330, 120)), _landmarks(0.3, 0.0, (440, 290))]
    for k, landmarks in enumerate(faces):  # the last face leaves the photo at two edges
        restored = np.random.default_rng(k).random((FACE_SIZE, FACE_SIZE, 3), dtype=np.float32)
        mask, (y0, y1, x0, x1) = paste_face(canvas, restored, alignment_matrix(landmarks), upscale)
        covered[y0:y1, x0:x1] |= mask > 0
    assert 0.1 < covered.mean() < 0.9
    np.testing.assert_array_equal(canvas[~covered], background[~covered])
    assert (canvas[covered] != background[covered]).any(-1).mean() > 0.9
    assert covered[-1].any() and covered[:, -1].any()  # the border face is pasted up to the edges


def test_a_face_at_the_border_is_padded_and_pasted_back():
    photo = np.full((200, 180, 3), 0.8, np.float32)
    landmarks = _landmarks(0.3, 0.0, (20, 100))  # the left eye is outside the photo
    matrix = alignment_matrix(landmarks)
    crop = warp_to_template(photo, matrix)
    np.testing.assert_allclose(crop[256, 5], PAD_RGB, atol=1e-6)  # gray where the crop leaves the photo
    np.testing.assert_allclose(crop[256, 400], 0.8, atol=1e-6)
    canvas = photo.copy()
    mask, (_, _, x0, _) = paste_face(canvas, np.zeros_like(crop), matrix)
    assert x0 == 0 and mask[:, 0].max() > 0.999  # reaches the left edge
    assert canvas[100, 0].max() < 1e-3


def test_paste_matrix_inverts_the_alignment_with_cv2_resize_pixel_centres():
    matrix = alignment_matrix(_landmarks(0.5, 10.0, (200, 150)))
    for upscale in (1, 2, 4):
        to_canvas = np.vstack([paste_matrix(matrix, upscale), [0, 0, 1]])
        photo_points = np.array([[3.0, 7.0], [120.25, 99.5]])
        crop_points = np.c_[photo_points, np.ones(2)] @ matrix.T
        canvas_points = np.c_[crop_points, np.ones(2)] @ to_canvas[:2].T
        np.testing.assert_allclose(canvas_points, upscale * (photo_points + 0.5) - 0.5, atol=1e-9)


# ---------------------------------------------------------------- detection


def test_select_faces_filters_sizes_orders_left_to_right_and_picks_the_centre():
    def face(x0, y0, side):
        return Face(np.array([x0, y0, x0 + side, y0 + side], float), 0.9, np.zeros((5, 2)))

    faces = [face(300, 10, 40), face(10, 10, 60), face(140, 120, 30), face(200, 200, 10)]
    assert [f.box[0] for f in select_faces(faces, 300, 400, min_face_size=20)] == [10, 140, 300]
    assert [f.box[0] for f in select_faces(faces, 300, 400, min_face_size=35, only_center_face=True)] == [300]
    assert [f.box[0] for f in select_faces(faces, 300, 400, only_center_face=True)] == [140]
    assert select_faces([], 300, 400, only_center_face=True) == []


def _check_plausible(face: Face) -> None:
    (eye_l, eye_r, nose, mouth_l, mouth_r), box = face.landmarks, face.box
    assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    assert (face.landmarks >= box[:2]).all() and (face.landmarks <= box[2:]).all()
    assert 0.25 < np.linalg.norm(eye_r - eye_l) / (box[2] - box[0]) < 0.75


def test_mtcnn_finds_the_astronaut_with_plausible_landmarks(mtcnn):
    faces = mtcnn.detect(data.astronaut().astype(np.float32) / 255)
    assert len(faces) == 1 and faces[0].score > 0.99
    face = faces[0]
    assert 170 < face.box[0] < face.box[2] < 280 and 50 < face.box[1] < face.box[3] < 190
    _check_plausible(face)
    matrix = alignment_matrix(face.landmarks)
    residual = np.c_[face.landmarks, np.ones(5)] @ matrix.T - FFHQ_TEMPLATE_512
    assert np.linalg.norm(residual, axis=1).mean() < 12  # a real face fits the template


def test_mtcnn_finds_nothing_in_photos_without_faces_or_too_small(mtcnn):
    for photo in (data.coffee()[::2, ::2], data.chelsea()[::2, ::2]):
        assert mtcnn.detect(photo.astype(np.float32) / 255) == []
    assert mtcnn.detect(np.zeros((10, 7, 3), np.float32)) == []  # smaller than the smallest face


def test_mtcnn_on_the_shared_aligned_faces_finds_faces_that_are_already_aligned(mtcnn, real_faces_dir):
    """The shared HQ faces are FFHQ/CelebA-HQ aligned: the central detection's landmarks, taken at
    half size and scaled back, align with about the identity."""
    for path in sorted((real_faces_dir / "hq").glob("*.png")):
        image = read_image(path)
        half = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
        faces = select_faces(mtcnn.detect(half), 256, 256, only_center_face=True)
        assert len(faces) == 1, path.name
        _check_plausible(faces[0])
        matrix = alignment_matrix((faces[0].landmarks + 0.5) * 2 - 0.5)
        scale = np.sqrt(np.linalg.det(matrix[:, :2]))
        angle = np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0]))
        centre = matrix @ [256, 256, 1]
        assert 0.8 < scale < 1.25 and abs(angle) < 10 and np.linalg.norm(centre - 256) < 40, \
            (path.name, scale, angle, centre)


def test_mtcnn_finds_two_faces_side_by_side_and_one_cut_by_the_border(mtcnn, faces_dir):
    halves = [cv2.resize(read_image(faces_dir / "hq" / f"hq_{k:03d}.png"), (256, 256), interpolation=cv2.INTER_AREA)
              for k in (0, 5)]  # two faces (astronaut crops where the shared photos are absent)
    faces = select_faces(mtcnn.detect(np.concatenate(halves, axis=1)), 256, 512)
    assert len(faces) == 2 and faces[0].box[2] < 256 < faces[1].box[0]
    astronaut = data.astronaut().astype(np.float32) / 255
    cut = mtcnn.detect(astronaut[0:300, 200:460])  # the face's left third is outside
    assert len(cut) == 1 and cut[0].box[0] < 0


def test_every_detector_names_registered_weights_and_retinaface_says_where_its_file_goes(tmp_path, monkeypatch):
    for spec in DETECTORS.values():
        assert all(key in WEIGHT_FILES for key in spec.weights)
    assert all(WEIGHT_FILES[key].present() for key in DETECTORS["mtcnn"].weights)  # inside facenet-pytorch
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError, match=r"detection_Resnet50_Final\.pth.*torch/hub/checkpoints"):
        build_detector("retinaface")
    with pytest.raises(ValueError, match="unknown face detector 'dlib'"):
        build_detector("dlib")
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "detection_Resnet50_Final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="detection_Resnet50_Final.pth"):
        build_detector("retinaface")


def _random_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Random weights fixed by each key's name (so two models with the same keys get the same)."""
    state = {}
    for key, value in model.state_dict().items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if key.endswith("num_batches_tracked"):
            state[key] = value
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith(("running_mean", "bias")):
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
        elif value.ndim == 1:
            state[key] = 1 + 0.1 * torch.randn(value.shape, generator=g)
        else:
            state[key] = torch.randn(value.shape, generator=g) * (0.5 / value[0].numel()) ** 0.5
    return state


@pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")  # facexlib calls resnet50(pretrained=False)
def test_retinaface_is_facexlibs_network_and_decoding(tmp_path):
    """Same keys and shapes as facexlib's RetinaFace (so its release loads strictly), and the same
    detections (boxes, scores, landmarks, NMS order) with random weights on an odd-sized photo."""
    reference_module = pytest.importorskip("facexlib.detection.retinaface")
    from latent_pmrf.faces.retinaface import RetinaFace, RetinaFaceDetector

    reference = reference_module.RetinaFace("resnet50", device="cpu").eval()
    ours = RetinaFace()
    keys = {k: list(v.shape) for k, v in reference.state_dict().items()}
    assert keys == {k: list(v.shape) for k, v in ours.state_dict().items()}
    state = _random_state(ours)
    reference.load_state_dict(state)
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "retinaface.pth")  # as released
    detector = RetinaFaceDetector(tmp_path / "retinaface.pth", score_threshold=0.5)

    bgr = np.random.default_rng(0).integers(0, 256, (75, 101, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference.detect_faces(bgr, conf_threshold=0.5)  # (N, 15): box, score, 5 (x, y)
    faces = detector.detect(np.ascontiguousarray(bgr[..., ::-1]) / 255)
    assert len(faces) == len(expected) > 20
    ours_rows = np.array([np.r_[f.box, f.score, f.landmarks.reshape(-1)] for f in faces])
    np.testing.assert_allclose(ours_rows, expected, atol=1e-3)


@pytest.mark.skipif(not WEIGHT_FILES["retinaface_resnet50"].present(), reason="detection_Resnet50_Final.pth not here")
def test_retinaface_finds_the_astronaut():
    faces = build_detector("retinaface").detect(data.astronaut().astype(np.float32) / 255)
    assert len(faces) == 1
    _check_plausible(faces[0])


# ---------------------------------------------------------------- restore --faces detect


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A random pixel-space pipeline cheap at 512² (f(y) and v_θ on 32² tokens)."""
    from latent_pmrf.flow import RestorationPipeline
    from latent_pmrf.models.hdit import HDiT, HDiTConfig
    from latent_pmrf.models.swinir import SwinIR, SwinIRConfig

    torch.manual_seed(0)
    velocity = HDiT(HDiTConfig(patch_size=16, mapping_width=32,
                               levels=[{"depth": 1, "width": 32, "d_head": 16, "attention": "global"}]))
    swinir = SwinIR(SwinIRConfig(embed_dim=12, depths=[1], num_heads=[2], window_size=4, scale=16, img_size=32,
                                 upsample_channels=8))
    folder = tmp_path_factory.mktemp("pipeline") / "pipe"
    RestorationPipeline(swinir, velocity, None, source_noise_std=0.2).save_pretrained(folder)
    return folder


def test_restore_detect_end_to_end(tiny_pipeline, tmp_path):
    """Two faces side by side (RGBA, odd width), a face cut by the border (gray), a photo without a
    face: every photo written at its size × upscale, crops beside them, the faceless one copied."""
    from latent_pmrf.cli.main import main

    astronaut = data.astronaut()
    crop = astronaut[0:300, 100:349]
    two = np.concatenate([crop, crop[:, ::-1]], axis=1)  # (300, 498)
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    Image.fromarray(np.dstack([two, np.full(two.shape[:2], 200, np.uint8)])).save(inputs / "two.png")
    Image.fromarray(astronaut[0:301, 200:459]).convert("L").save(inputs / "sub" / "border.png")
    Image.fromarray(data.coffee()[::4, ::4]).save(inputs / "none.jpg")
    out = tmp_path / "out"
    main(["restore", "--ckpt", str(tiny_pipeline), "--input", str(inputs), "--output", str(out), "--steps", "1",
          "--device", "cpu", "--faces", "detect", "--upscale", "2", "--batch-size", "2"])

    def size(path):
        with Image.open(path) as im:
            return im.size

    assert size(out / "restored" / "two.png") == (2 * 498, 2 * 300)
    assert size(out / "restored" / "sub" / "border.png") == (2 * 259, 2 * 301)
    for name in ("two_00.png", "two_01.png", "sub/border_00.png"):
        assert size(out / "faces" / "aligned" / name) == size(out / "faces" / "restored" / name) == (512, 512)
    assert not (out / "faces" / "aligned" / "two_02.png").exists()
    border_crop = np.asarray(Image.open(out / "faces" / "aligned" / "sub" / "border_00.png"))
    assert (np.abs(border_crop[256, :20].astype(int) - np.rint(np.array(PAD_RGB) * 255)) <= 1).all()  # padded
    faceless = np.asarray(Image.open(out / "restored" / "none.png"))
    expected = upscale_background(read_image(inputs / "none.jpg"), 2)
    assert np.array_equal(faceless, np.rint(expected * 255).astype(np.uint8))


def test_restore_detect_skips_faceless_photos_on_request_and_face_flags_need_detect(tiny_pipeline, tmp_path):
    from latent_pmrf.cli.main import main
    from latent_pmrf.cli.restore import restore
    from latent_pmrf.cli.restore_faces import FaceOptions

    Image.fromarray(data.coffee()[::4, ::4]).save(tmp_path / "none.png")
    summary = restore(tiny_pipeline, tmp_path / "none.png", tmp_path / "out", steps=1,
                      faces=FaceOptions(skip_no_face=True, only_center_face=True))
    assert summary.written == [] and summary.no_face == [tmp_path / "none.png"] and summary.failed == []
    assert not (tmp_path / "out" / "restored").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["restore", "--ckpt", str(tiny_pipeline), "--input", str(tmp_path), "--output", str(tmp_path / "o"),
              "--upscale", "2"])
    assert exit_info.value.code == 2
    for bad in ({"upscale": 0}, {"upscale": 1.5}, {"min_face_size": 0}, {"detector": "dlib"}):
        with pytest.raises(ValueError):
            FaceOptions(**bad)
