"""Transfer (Tables 4-6, Fig. 9) and per-layer probes (Table 7) on tiny real runs of the real code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zfnet.config import ConfigError, ModelConfig, TrainConfig, TransferConfig, TransferSyntheticConfig, compose, from_dict
from zfnet.data import caltech, voc
from zfnet.data.imagenet import LayoutError
from zfnet.data.synthetic import CLASS_NAMES
from zfnet.data.synthetic_transfer import write_transfer
from zfnet.data.transforms import center_crop, normalize
from zfnet.data.views import load_views
from zfnet.experiments import classifier, probes, transfer
from zfnet.experiments import transfer_report as report
from zfnet.experiments.features import features, logits
from zfnet.models import build

TINY_MODEL = ModelConfig(widths=[8, 16, 16, 16, 8], fc_sizes=[32, 32])
SIZE, CROP = 64, 56  # the tiny profile's geometry (smaller crops leave conv5 nothing to pool)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    cfg = TransferSyntheticConfig(caltech101_classes=3, caltech256_classes=3, caltech101_images=[8, 9],
                                  caltech256_images=[8, 8], background_images=1, voc_images=16, min_side=36,
                                  max_side=44, seed=2)
    root = tmp_path_factory.mktemp("tr") / "transfer"
    write_transfer(root, cfg, CLASS_NAMES[:10], progress=False)
    return root


def make_setup(**transfer_overrides) -> transfer.Setup:
    torch.manual_seed(0)
    model = build(TINY_MODEL, 5, CROP, input_scale=1 / 64).eval()
    settings = dict(splits=2, scratch_splits=1, scratch_steps=3, scratch_batch_size=8, test_per_class=3, max_iter=30)
    t = TransferConfig(**{**settings, **transfer_overrides})
    train = TrainConfig(crop=CROP, init="kaiming", lr=0.01, input_scale=1 / 64)
    return transfer.Setup(model, torch.full((3, SIZE, SIZE), 120.0), TINY_MODEL, train, t, seed=0)


def test_average_precision_is_the_voc_all_points_area():
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    # hits at ranks 1 and 3: precision 1 up to recall 0.5, then 2/3 up to recall 1.
    assert classifier.average_precision(scores, np.array([1, -1, 1, -1])) == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
    # the second image marked difficult (0) is ignored: both positives come first.
    assert classifier.average_precision(scores, np.array([1, 0, 1, -1])) == pytest.approx(100.0)
    # hits at ranks 3 and 4: precision 1/3 then 2/4; interpolated (max to the right): 1/2 at both recalls.
    assert classifier.average_precision(scores, np.array([-1, -1, 1, 1])) == pytest.approx(50.0)
    assert np.isnan(classifier.average_precision(scores, -np.ones(4)))


def test_mean_class_accuracy_weights_classes_not_images():
    labels = torch.tensor([0, 0, 0, 0, 1])
    pred = torch.tensor([0, 0, 0, 0, 0])
    assert classifier.mean_class_accuracy(pred, labels) == pytest.approx(50.0)  # image accuracy would be 80


def test_class_split_draws_n_per_class_disjoint_and_reproducible():
    labels = np.repeat(np.arange(3), [10, 6, 8])
    train, test = transfer.class_split(labels, 4, 3, seed=1, split=0)
    assert np.bincount(labels[train]).tolist() == [4, 4, 4] and np.bincount(labels[test]).tolist() == [3, 2, 3]
    assert not set(train) & set(test)
    again, _ = transfer.class_split(labels, 4, 3, seed=1, split=0)
    other, _ = transfer.class_split(labels, 4, 3, seed=1, split=1)
    assert (again == train).all() and not (other == train).all()
    with pytest.raises(LayoutError, match="too few"):
        transfer.class_split(labels, 6, 3, seed=1, split=0)


def test_fit_softmax_separates_classes_and_labels():
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 10, generator=gen) * 3
    y = torch.arange(3).repeat_interleave(20)
    x = centres[y] + torch.randn(60, 10, generator=gen) + 50  # an offset the centring must remove
    clf = classifier.fit_softmax(x, y, 3, l2=1e-3, max_iter=20)
    assert classifier.mean_class_accuracy(clf(x).argmax(1), y) == 100.0
    multi = torch.stack([y == 0, y != 2], 1).float()  # two labels per image
    clf2 = classifier.fit_softmax(x, multi, 2, l2=1e-3, max_iter=20)
    assert ((clf2(x) > 0).float() == multi).all()


def test_fit_softmaxes_on_every_core_equal_the_fits_one_by_one():
    """The probes' and transfer rows' fits run at once on threads (one CPU thread each), and each
    classifier is bit for bit the one :func:`fit_softmax` fits alone, in the order given; the
    caller's thread count is restored."""
    gen = torch.Generator().manual_seed(2)
    problems = []
    for dims in (40_000, 3000, 64, 512):  # conv1-sized and fc7-sized features, large enough for threaded kernels
        y = torch.arange(6).repeat_interleave(30)
        problems.append((torch.randn(6, dims, generator=gen)[y] + 2 * torch.randn(180, dims, generator=gen).relu(), y))
    threads = torch.get_num_threads()
    alone = [classifier.fit_softmax(x, y, 6, max_iter=15) for x, y in problems]
    together = classifier.fit_softmaxes(problems, 6, max_iter=15, workers=2)
    assert torch.get_num_threads() == threads
    for a, b in zip(alone, together):
        assert torch.equal(a.linear.weight, b.linear.weight) and torch.equal(a.mu, b.mu)


def test_fit_softmax_minimises_scikit_learns_logistic_regression_objective():
    """At convergence our L-BFGS softmax is scikit-learn's multinomial LogisticRegression with
    C = 1 / (l2 * N) on the same centred, scaled features: probabilities agree to 1e-4
    (classifier.py says why the experiments still use ours)."""
    from sklearn.linear_model import LogisticRegression

    gen = torch.Generator().manual_seed(1)
    y = torch.arange(4).repeat_interleave(15)
    x = torch.randn(4, 12, generator=gen)[y] * 1.5 + torch.randn(60, 12, generator=gen)  # overlapping classes
    l2 = 1e-2
    ours = classifier.fit_softmax(x, y, 4, l2=l2, max_iter=500)
    z = ((x - ours.mu) / ours.scale).double().numpy()
    theirs = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=5000).fit(z, y.numpy())
    probs = ours(x).softmax(1).detach().double().numpy()
    assert np.abs(probs - theirs.predict_proba(z)).max() < 1e-4
    assert (probs.argmax(1) == theirs.predict(z)).all()


def test_features_are_the_block_outputs_and_hooks_are_removed():
    s = make_setup()
    images = torch.randint(0, 256, (5, 3, SIZE, SIZE), dtype=torch.uint8)
    feats = features(s.model, images, s.mean, ["conv1", "conv5", "fc7"], batch_size=2)
    x = normalize(center_crop(images, CROP), center_crop(s.mean, CROP), 1 / 64)  # the model's input_scale
    with torch.no_grad():
        conv5 = s.model.features(x)
        fc7 = s.model.classifier[:-1](conv5)  # flatten, fc6, fc7 (eval: no dropout)
    assert torch.allclose(feats["conv5"], conv5.flatten(1), atol=1e-5) and torch.allclose(feats["fc7"], fc7, atol=1e-5)
    assert feats["conv1"].shape[0] == 5 and (feats["fc7"] >= 0).all()
    assert all(not m._forward_hooks for m in s.model.modules())


def test_scratch_training_uses_the_recipe():
    s = make_setup()
    images = torch.randint(0, 256, (12, 3, SIZE, SIZE), dtype=torch.uint8)
    y = torch.arange(3).repeat(4)
    net, mean = transfer.train_scratch(TINY_MODEL, s.train_cfg, images, y, 3, CROP, steps=5, batch_size=4)
    assert not net.training and net.num_classes == 3 and mean.shape == (3, SIZE, SIZE)
    rms = [m.weight.pow(2).mean(dim=(1, 2, 3)).sqrt().max() for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(rms) <= s.train_cfg.renorm_radius + 1e-6  # filter renormalisation after every step
    assert logits(net, images, mean).shape == (12, 3) and net.input_scale == s.train_cfg.input_scale


def test_caltech_rows_tables_and_fig9(data_root, tmp_path):
    s = make_setup()
    data = caltech.read_caltech101(data_root)
    rows = transfer.caltech(s, data, [2, 4])
    assert [(r["train_per_class"], r["model"], r["runs"]) for r in rows] == [
        (2, "pretrained", 2), (2, "scratch", 1), (4, "pretrained", 2), (4, "scratch", 1)]
    assert all(0 <= r["accuracy"] <= 100 for r in rows)
    table = report.caltech_table("caltech101", [{**r, "train_per_class": 15} for r in rows[:2]])
    assert table["paper_accuracy"].tolist() == [83.8, 22.8] and table["paper_accuracy_std"].tolist() == [0.5, 1.5]
    path = report.fig9(rows, "caltech101", tmp_path / "fig9.png")
    assert Image.open(path).size[0] > 300


def test_voc_ap_per_class_and_table(data_root, tmp_path):
    s = make_setup()
    train, val = voc.read_split(data_root, "train"), voc.read_split(data_root, "val")
    results = transfer.voc(s, train.paths, train.targets, val.paths, val.targets, train.classes)
    assert set(results) == {"pretrained", "scratch"}
    for r in results.values():
        present = (val.targets == 1).any(0)
        aps = np.array(list(r["ap"].values()))
        assert (np.isnan(aps) == ~present).all() and r["map"] == pytest.approx(np.nanmean(aps))
    table = report.voc_table(results)
    assert table.iloc[0]["paper_ap"] == 79.0 and table.iloc[0]["class"] == "mean (mAP)"
    assert Image.open(report.ap_figure(results, tmp_path / "ap.png")).size[0] > 300


def test_probes_cover_each_layer_and_the_trend():
    root_rows = {"conv1": 30.0, "conv2": 40.0, "conv5": 35.0, "fc7": 60.0}
    trend = probes.depth_trend({k: {"accuracy": v} for k, v in root_rows.items()})
    assert trend["best_layer"] == "fc7" and trend["increases"] == pytest.approx(2 / 3)
    assert trend["top_minus_bottom"] == 30.0 and 0 < trend["spearman"] < 1
    assert probes.depth_trend({k: {"accuracy": float(i)} for i, k in enumerate(root_rows)})["spearman"] == pytest.approx(1.0)
    # a tie shares its mean rank: ranks 1, 2.5, 2.5, 4 against depths 1..4
    tied = probes.depth_trend({"conv1": {"accuracy": 10.0}, "conv2": {"accuracy": 100 * (0.1 + 0.2) / 1.5},
                               "conv5": {"accuracy": 100 * 0.3 / 1.5}, "fc7": {"accuracy": 30.0}})  # 20, but for rounding
    assert tied["spearman"] == pytest.approx(np.corrcoef([1, 2, 3, 4], [1, 2.5, 2.5, 4])[0, 1])
    assert probes.depth_trend({"conv1": {"accuracy": 5.0}, "fc7": {"accuracy": 5.0}})["spearman"] == 0.0
    table = probes.probe_table({"caltech256": {"conv1": {"accuracy": 1.0, "accuracy_std": 0.0, "runs": 1, "dims": 9}}},
                               {"caltech256": 60})
    assert table.iloc[0]["paper_accuracy"] == 24.6


def test_probe_runs_on_real_layout(data_root):
    s = make_setup(splits=1)
    result = probes.probe(s, caltech.read_caltech256(data_root), 4, ["conv1", "conv3", "fc7"])
    assert list(result) == ["conv1", "conv3", "fc7"] and result["fc7"]["dims"] == 32
    assert result["conv1"]["dims"] > result["conv3"]["dims"]


def test_transfer_config_is_validated():
    base = compose(["experiment=tiny"])
    assert from_dict(base).transfer.splits == 2
    for key, value, match in [
        ("caltech101_train", [3, 8], "leave no test image"),
        ("source", "real", "transfer.caltech101"),
        ("scratch_splits", 5, "scratch_splits"),
        ("probe", {**base["transfer"]["probe"], "layers": ["fc8"]}, "probe.layers"),
    ]:
        bad = {**base, "transfer": {**base["transfer"], key: value}}
        with pytest.raises(ConfigError, match=match):
            from_dict(bad)


def test_voc_views_are_the_whole_image_and_its_quadrants(tmp_path):
    # a 16 x 16 image with four flat quadrants: each quadrant view is one colour, the whole view all four
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    pixels = np.zeros((16, 16, 3), np.uint8)
    for k, (y, x) in enumerate([(0, 0), (0, 8), (8, 0), (8, 8)]):
        pixels[y : y + 8, x : x + 8] = colours[k]
    Image.fromarray(pixels).save(tmp_path / "q.png")
    five = load_views([tmp_path / "q.png"], 8, 5)
    assert five.images.shape == (5, 1, 3, 8, 8) and five.kept == [0]
    for k, colour in enumerate(colours):
        assert (five.images[1 + k, 0] == torch.tensor(colour, dtype=torch.uint8)[:, None, None]).all()
    whole = five.images[0, 0]
    assert tuple(whole[:, 1, 1]) == colours[0] and tuple(whole[:, 6, 6]) == colours[3]
    one = load_views([tmp_path / "q.png"], 8, 1)
    assert one.images.shape == (1, 1, 3, 8, 8)


def test_voc_with_one_view_is_the_centre_crop_protocol(data_root):
    s = make_setup(voc_views=1, scratch_splits=0)
    train, val = voc.read_split(data_root, "train"), voc.read_split(data_root, "val")
    results = transfer.voc(s, train.paths, train.targets, val.paths, val.targets, train.classes)
    assert set(results) == {"pretrained"} and 0 <= results["pretrained"]["map"] <= 100
